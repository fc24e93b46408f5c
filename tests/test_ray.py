"""Studies on a local Ray instance (2 CPUs, no dashboard), started and stopped by these tests."""
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
import torch

from comparisons.analysis.cells import cell_stats
from comparisons.core.config import SamplerConfig
from comparisons.core.grid import REFERENCE, StudySpec
from comparisons.results.store import ResultsStore
from comparisons.specs import questions_from
from comparisons.workflows.report import summary_rows
from comparisons.workflows.study import run_study
from sampler_lib.models import load_model
from tests.conftest import ROOT

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@pytest.fixture(scope="module")
def ray_local():
    import ray
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def tiny_spec(seeds=tuple(range(8))):
    return StudySpec(name="tiny", model="embedded", questions=questions_from("final-zero,discretization"),
                     samplers=("heun",), steps=(3, 6), prompts=("a red circle", "a blue ring"), seeds=seeds,
                     reference=SamplerConfig.from_dict({"steps": 10}, REFERENCE), reference_check=2)


def test_ray_gives_the_local_summary(tmp_path, ray_local, lpips_metric):
    from comparisons.workflows.distributed import run_study_ray
    spec = tiny_spec(seeds=(0, 1, 2))
    local = ResultsStore(tmp_path / "local.db")
    # Same shards, same thread count as each 1-CPU actor: oneDNN's sums then run in the same order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_study(local, load_model("embedded", device="cpu"), lpips_metric, spec, batch=2)
    finally:
        torch.set_num_threads(threads)
    remote = ResultsStore(tmp_path / "ray.db")
    seen = []
    run = run_study_ray(ray_local, remote, spec, batch=2, workers=2,
                        progress=lambda done, total, running, workers: seen.append((done, total, workers)))
    assert run.rows_written == 4 * 6 and seen[-1] == (3, 3, 2)
    rows_local, rows_ray = (s.study_rows(spec.study_id) for s in (local, remote))
    assert len(rows_ray) == len(rows_local) == 24
    summary_local = summary_rows(cell_stats(spec, rows_local))
    summary_ray = summary_rows(cell_stats(spec, rows_ray))
    for a, b in zip(summary_local, summary_ray):
        for key, value in a.items():
            assert b[key] == value or (value != value and b[key] != b[key]), key  # bit-identical


def test_a_killed_worker_is_replaced_and_its_shard_retried(tmp_path, ray_local):
    from comparisons.workflows.distributed import run_study_ray
    spec = tiny_spec(seeds=(0, 1, 2, 3))
    store = ResultsStore(tmp_path / "r.db")
    killed = []

    def kill_one(n, actors):
        if n == 0:
            pids = [ray_local.get(a.pid.remote()) for a in actors]
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    run = run_study_ray(ray_local, store, spec, batch=1, workers=2, after_chunk=kill_one)
    assert killed and run.samples_run == 8
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT COUNT(*) FROM study_rows").fetchone()[0] == 8 * 4
    assert conn.execute("SELECT COUNT(DISTINCT question || steps || prompt || seed) FROM study_rows"
                        ).fetchone()[0] == 8 * 4
    assert conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0] == 8 * 4


def test_unreachable_address_exits_2_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "comparisons", "study", "--questions", "final-zero", "--steps", "3",
                           "--seeds", "0-1", "--results", str(tmp_path / "res" / "r.db"), "--out",
                           str(tmp_path / "out"), "--ray", "127.0.0.1:9"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # a fail-safe, as LiveApp's
    err = [line for line in proc.stderr.splitlines() if "warn" not in line.lower()]
    assert proc.returncode == 2 and len(err) == 1 and "no Ray cluster answers at 127.0.0.1:9" in err[0], proc.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path / "out").exists()


def test_without_ray_nothing_imports_it():
    code = ("import sys, app, comparisons.cli, comparisons.workflows.study, comparisons.workflows.report;"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
