"""The hosted demo: Dockerfile lint, caps, rate limits, persistence. The image itself is built, served, voted on
and restarted for real by `make docker-test`, which CI runs after the suite (.ci/run)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from gradio_client import Client

from comparisons.errors import RateLimited
from tests.conftest import ROOT, LiveApp, free_port
from ui.limits import RateLimiter

DOCKERFILE = ROOT / "Dockerfile"


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--failure-threshold", "error", "--format", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and not [f for f in findings if f["level"] == "error"], findings
    text = DOCKERFILE.read_text()
    assert "EXPOSE 7860" in text and "USER 1000" in text and "--hosted" in text
    import re
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), f"base image not pinned to an exact tag: {base}"
    assert "HEALTHCHECK" in text
    # /data and WORKDIR are made and owned by uid 1000 before USER switches to it.
    assert text.index("chown 1000:1000 /data /home/user/app") < text.index("USER 1000")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"tests", "bench", ".ci", "results", ".pytest_cache", ".ruff_cache", ".hypothesis"} <= set(ignored)


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    app = LiveApp(tmp_path_factory.mktemp("hosted") / "results.db", "--hosted")
    yield app
    app.stop()


def test_request_above_the_caps_is_refused(hosted):
    with pytest.raises(Exception, match="at most 100 steps"):
        Client(hosted.url, verbose=False).predict("a red circle", 1, "final-zero", 101, "heun",
                                                  api_name="/generate_pair")


def test_fresh_sessions_cannot_reset_the_rate_limits(hosted):
    """20 fresh clients from one address: at most the per-address cap of generations (6 a minute) run."""
    ran, refused = 0, 0
    for _ in range(20):
        try:
            Client(hosted.url, verbose=False).predict("a red circle", 1, "final-zero", 2, "euler",
                                                      api_name="/generate_pair")
            ran += 1
        except Exception as exc:  # noqa: BLE001 - counted and checked below
            assert "too many generations from your address" in str(exc)
            refused += 1
    assert ran <= 6 and ran + refused == 20 and refused >= 14
    voters = [Client(hosted.url, verbose=False) for _ in range(31)]
    for voter in voters[:30]:
        with pytest.raises(Exception, match="not served to you"):
            voter.predict("nope", "left", "", api_name="/vote")
    with pytest.raises(Exception, match="too many votes from your address"):
        voters[30].predict("nope", "left", "", api_name="/vote")


TOKEN = "t" * 24  # --export-token: a hosted /export_votes exists only with one


def test_votes_survive_a_restart(tmp_path):
    results = tmp_path / "data" / "results.db"
    app = LiveApp(results, "--hosted", "--export-notes", "--export-token", TOKEN)
    try:
        c = Client(app.url, verbose=False)
        voted = c.predict("a cyan triangle", 5, "sigma-min", 3, "heun", api_name="/generate_pair")
        c.predict(voted["pair_id"], "left", "before restart", api_name="/vote")
        pending = c.predict("a cyan triangle", 6, "sigma-min", 3, "heun", api_name="/generate_pair")
        session = c.session_hash
    finally:
        app.stop()
    app = LiveApp(results, "--hosted", "--export-notes", "--export-token", TOKEN)
    try:
        c = Client(app.url, verbose=False, headers={"X-Export-Token": TOKEN})  # /export_votes asks for it on hosted
        c.session_hash = session  # the same visitor after the restart (the pair was served to this session)
        c.predict(pending["pair_id"], "tie", "after restart", api_name="/vote")
        votes = pd.read_csv(c.predict(api_name="/export_votes"))
        assert list(votes["note"]) == ["before restart", "after restart"]
        assert session not in set(votes["session"])  # hosted exports give salted hashes
        assert votes["session"].nunique() == 1
    finally:
        app.stop()


def test_hosted_mode_serves_only_its_own_model():
    import app
    from comparisons.core.config import make_pair
    from ui.compare import serve_pair
    settings = app.Settings(app.parse_args(["--hosted"]))
    assert settings.models == ["embedded"] and settings.queue_size == 64
    with pytest.raises(Exception, match="unknown model"):
        serve_pair(None, settings, None, "a red circle", 1, "/etc/passwd", "final-zero", *make_pair("final-zero"))


def test_rate_limiter_window():
    now = [0.0]
    limiter = RateLimiter(2, window=10, clock=lambda: now[0])
    limiter.check("s")
    limiter.check("s")
    with pytest.raises(RateLimited, match="try again in 10 s"):
        limiter.check("s")
    limiter.check("other")
    now[0] = 10.5
    limiter.check("s")


def test_share_without_network_fails_clearly(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--share", "--port", str(free_port()),
                           "--results", str(tmp_path / "r.db")], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert proc.returncode != 0 and "--share could not create a public link" in proc.stderr
