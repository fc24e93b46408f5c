"""gradio_client against a live app on a loopback port."""
import base64
import io
import threading

import pandas as pd
import pytest
from gradio_client import Client
from PIL import Image

from comparisons.results.store import ResultsStore


def client(app):
    return Client(app.url, verbose=False)


def decode(url):
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_generate_vote_duplicate_export(live_app):
    c = client(live_app)
    out = c.predict("a blue square", 4, "discretization", 6, "heun", api_name="/generate_pair")
    left, right = decode(out["left"]), decode(out["right"])
    assert left.size == right.size == (32, 32)
    assert not left.text and not right.text, "shown images carry no metadata"
    vote = c.predict(out["pair_id"], "right", "sharper edges", api_name="/vote")
    assert vote["choice"] == "right" and vote["winner"] == vote["reveal"]["right"]
    assert {vote["reveal"]["config_a"]["quantize"], vote["reveal"]["config_b"]["quantize"]} == {"paper", "off"}
    with pytest.raises(Exception, match="already voted"):
        c.predict(out["pair_id"], "left", "", api_name="/vote")
    votes = pd.read_csv(c.predict(api_name="/export_votes"))
    mine = votes[votes["session"] == c.session_hash]
    assert len(mine) == 1 and mine["winner"].iloc[0] == vote["winner"] and mine["note"].iloc[0] == "sharper edges"
    assert mine["left_config"].iloc[0] == vote["reveal"]["left"]


def test_visibility_is_decided_by_flip_on_the_cases_a_person_can_check(live_app):
    """The issue's reproduction (max |delta| 64/255, the ring visibly thicker) is visible; the discretization preset
    at 25 steps (max |delta| 1/255) is below visibility. Both through /generate_pair, with FLIP's figures."""
    c = client(live_app)
    ring = c.predict("a blue ring", 334963728, "sigma-min-vs-model", 10, "heun", api_name="/generate_pair")
    v = ring["visibility"]
    assert not v["below"] and v["max_abs_diff"] == 64 and v["flip_max"] >= v["flip_threshold"] == 0.1
    assert v["sentence"].startswith("Visible") and "FLIP" in v["rule"] and v["ppd"] == 67
    flat = c.predict("a red circle", 0, "discretization", 25, "heun", api_name="/generate_pair")["visibility"]
    assert flat["below"] and flat["max_abs_diff"] == 1 and flat["flip_max"] < 0.1
    assert flat["sentence"].startswith("Below visibility")
    # Every vote's row in votes.csv is complete, for a Compare vote as for a campaign vote.
    c.predict(ring["pair_id"], "left", "", api_name="/vote")
    votes = pd.read_csv(c.predict(api_name="/export_votes"))
    row = votes[votes["session"] == c.session_hash].iloc[0]
    assert (row["model"], row["prompt"], row["seed"], row["pairing"]) == ("embedded", "a blue ring", 334963728,
                                                                           "sigma-min-vs-model")
    assert (row["sampler"], row["steps"], row["visible"]) == ("heun", 10, "visible") and row["lpips"] > 0
    assert row["a_sigma_min_rule"] == "penultimate_steps_plus_1" and row["b_sigma_min_rule"] == "model"
    assert row["left_config"] in ("A", "B") and row["winner"] == row["left_config"] and row["created"]


@pytest.mark.parametrize("args, message", [
    (("a red circle", 1, "discretization", 0, "heun"), "steps must be ≥ 1"),
    (("a red circle", 1, "discretization", 1001, "heun"), "steps must be ≤ 1000"),
    (("", 1, "discretization", 5, "heun"), "prompt is empty"),
    (("a red circle", 1, "discretization", 5, "plms"), "unknown sampler"),
    (("a red circle", 1, "best-one", 5, "heun"), "unknown pairing"),
    (("a pink circle", 1, "discretization", 5, "heun"), "pink"),
    (("a red circle", 1.5, "discretization", 5, "heun"), "seed must be a whole number"),
    (("a red circle", 1, "discretization", 2.5, "heun"), "steps must be a whole number"),
    (("a red circle", -3, "discretization", 5, "heun"), "seed"),
])
def test_bad_inputs_are_refused_and_nothing_recorded(live_app, args, message):
    before = len(ResultsStore(live_app.results).pairs())
    with pytest.raises(Exception, match=message):
        client(live_app).predict(*args, api_name="/generate_pair")
    assert len(ResultsStore(live_app.results).pairs()) == before


def test_bad_votes(live_app):
    c = client(live_app)
    with pytest.raises(Exception, match="not served to you"):
        c.predict("nope", "left", "", api_name="/vote")
    out = c.predict("a red circle", 2, "final-zero", 4, "euler", api_name="/generate_pair")
    with pytest.raises(Exception, match="choice must be one of"):
        c.predict(out["pair_id"], "up", "", api_name="/vote")


def test_votes_count_only_on_pairs_served_to_the_voter(live_app):
    """20 fresh sessions cannot vote on one visitor's pair; each visitor's own vote counts once."""
    owner = client(live_app)
    out = owner.predict("a green ring", 9, "sigma-min", 4, "heun", api_name="/generate_pair")
    store = ResultsStore(live_app.results)
    before = len(store.votes())
    for other in [client(live_app) for _ in range(20)]:
        with pytest.raises(Exception, match="not served to you"):
            other.predict(out["pair_id"], "left", "forged", api_name="/vote")
    assert len(store.votes()) == before
    owner.predict(out["pair_id"], "tie", "", api_name="/vote")
    assert len(store.votes()) == before + 1


def test_concurrent_voters_lose_no_vote(live_app):
    """24 sessions, each served the same stored pair, vote at once: 24 votes, one per session."""
    out = client(live_app).predict("a green ring", 9, "sigma-min", 4, "heun", api_name="/generate_pair")
    store = ResultsStore(live_app.results)
    first = store.served(out["pair_id"])
    voters = [client(live_app) for _ in range(24)]
    served = [store.serve(first["pair_id"], c.session_hash, "A" if i % 2 else "B") for i, c in enumerate(voters)]
    errors = []

    def vote(c, i):
        try:
            c.predict(served[i], ("left", "right", "tie", "both_bad")[i % 4], f"v{i}", api_name="/vote")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=vote, args=(c, i)) for i, c in enumerate(voters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    votes = [v for v in store.votes() if v["pair_id"] == first["pair_id"]]
    assert len(votes) == 24 and len({v["session"] for v in votes}) == 24
    # The side each session was shown is stored with its vote.
    assert {v["session"]: v["left_config"] for v in votes} == {c.session_hash: "A" if i % 2 else "B"
                                                               for i, c in enumerate(voters)}
    # The server is still answering after the burst.
    assert client(live_app).predict("a red circle", 1, "final-zero", 3, "euler", api_name="/generate_pair")


def test_nan_is_refused_before_any_work(tmp_path):
    # JSON cannot carry NaN, so the check is exercised where the API hands values to the engine.
    from comparisons.core.config import check_seed
    from comparisons.errors import ConfigError
    from ui.inputs import preset_configs
    with pytest.raises(ConfigError, match="steps"):
        preset_configs("discretization", float("nan"), "heun", 3.0)
    with pytest.raises(ConfigError, match="seed"):
        check_seed(float("nan"))
