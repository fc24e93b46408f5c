"""Studies on a Ray cluster: shards of samples run in actors that load the model once; the driver alone
writes the results store (SQLite stays single-writer), so a study resumes exactly like a local one.

Imported only with `study --ray`: nothing else in the project imports Ray.
"""
import contextlib
import os
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from ..core.grid import StudySpec
from ..errors import RayUnavailable
from .study import Plan, StudyRun, compute_chunk, known_outputs, plan_study, store_chunk


def _reachable(address, timeout=5.0):
    """Refuse an address nobody listens on in seconds, before Ray's own minute-long retries."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise RayUnavailable(f"--ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as exc:
        raise RayUnavailable(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                             "`ray start --head` there, or use --ray auto for a local instance") from exc


def connect(address):
    """ray.init for `auto` (this machine's cluster, else a local instance) or an explicit address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray
    if address == "auto":
        try:
            ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
        except ConnectionError:
            ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        return ray
    _reachable(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - any failure to join is one line for the user
        raise RayUnavailable(f"cannot join the Ray cluster at {address} ({str(exc).splitlines()[0][:200]})") from exc
    return ray


class StudyWorker:
    """One model and one LPIPS per actor, loaded once; runs shards and returns what they produced."""

    def __init__(self, model_name, lpips_weights, spec_json, threads=None, compile_network=False, compile_mode=None):
        import torch

        from sampler_lib.models import load_model

        from ..core.engine import compiled
        from ..core.metrics import LPIPS
        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(model_name)
        # The compiled network lasts as long as the actor; close() (the driver calls it) restores it.
        self._held = contextlib.ExitStack()
        if compile_network:
            self._held.enter_context(compiled(self.model, mode=compile_mode))
        self.metric = LPIPS(lpips_weights)
        spec = StudySpec.from_json(spec_json)
        cells = spec.cells()
        self.plan = Plan(spec, cells, list(dict.fromkeys(c for cell in cells for c in (cell.a, cell.b))), [], 0, 0)

    def pid(self):
        return os.getpid()

    def close(self):
        """Leave what __init__ entered (the compiled network)."""
        self._held.close()

    def run(self, chunk, known):
        return compute_chunk(self.model, self.metric, self.plan, chunk, known)


@dataclass
class Cluster:
    workers: int
    gpus_per_worker: float
    cpus_per_worker: float


def size_workers(ray, workers=None, gpus_per_worker=None):
    """How many actors, and what each asks for: a GPU each where the cluster has GPUs, else CPUs."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 1)
    if gpus:
        per = gpus_per_worker or 1
        return Cluster(workers or max(1, int(gpus // per)), per, 1)
    if gpus_per_worker:
        raise RayUnavailable(f"--ray-gpus-per-worker {gpus_per_worker} asks for GPUs, but the cluster has none")
    n = workers or max(1, int(cpus))
    return Cluster(n, 0, max(1.0, cpus // n) if n <= cpus else cpus / n)


def run_study_ray(ray, store, spec, batch, lpips_weights=None, workers=None, gpus_per_worker=None, progress=None,
                  after_chunk=None, compile_network=False, compile_mode=None):
    """The study's missing shards on the cluster; results stored by this process as they arrive."""
    started = time.perf_counter()
    plan = plan_study(store, spec, batch)
    run = StudyRun(spec)
    if not plan.chunks:
        run.seconds = time.perf_counter() - started
        return run
    cluster = size_workers(ray, workers, gpus_per_worker)
    n = min(cluster.workers, len(plan.chunks))
    threads = max(1, int(cluster.cpus_per_worker)) if not cluster.gpus_per_worker else None
    actor = ray.remote(num_cpus=cluster.cpus_per_worker, num_gpus=cluster.gpus_per_worker,
                       max_restarts=3, max_task_retries=3)(StudyWorker)
    actors = [actor.remote(spec.model, lpips_weights, spec.to_json(), threads, compile_network, compile_mode)
              for _ in range(n)]
    idle, futures, chunks = list(actors), {}, iter(plan.chunks)
    done = 0
    if progress:
        progress(0, len(plan.chunks), 0, n)
    try:
        while True:
            while idle:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                worker = idle.pop()
                futures[worker.run.remote(chunk, known_outputs(store, plan, chunk))] = (worker, chunk)
            if not futures:
                break
            ready, _ = ray.wait(list(futures), num_returns=1)
            worker, chunk = futures.pop(ready[0])
            result = ray.get(ready[0])  # a dead worker is restarted and its shard retried by Ray
            run.network_batches.extend(result.network_batches)
            run.rows_written += store_chunk(store, plan, result)
            run.samples_run += len(chunk)
            run.images += len(chunk) * len(plan.arms)
            idle.append(worker)
            done += 1
            if progress:
                progress(done, len(plan.chunks), len(futures), n)
            if after_chunk:
                after_chunk(done - 1, actors)
    finally:
        # Every actor leaves its compiled network before it goes (a dead one is simply skipped).
        ray.wait([a.close.remote() for a in actors], num_returns=len(actors), timeout=30)
        for a in actors:
            ray.kill(a)
    run.seconds = time.perf_counter() - started
    return run
