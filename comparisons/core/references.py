"""The sample caches of a results file, both keyed by (model, prompt, seed, config, precision): references (a
converged image, shared by studies, sweeps and the app) and arm outputs (every arm a study sampled, so a later
study over the same samples samples only what it adds). The store is passed in; nothing here opens a file by
itself."""
import hashlib
import json
import time
from dataclasses import dataclass

from sampler_lib.models.guidance import to_pil
from sampler_lib.named_schedules import REVISIONS

from .engine import increments, sample_arms
from .metrics import unit_images


def _digest(*parts):
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:32]


def _config_key(cfg):
    """The config as a cache key: its JSON, plus its schedule's revision where the schedule's values changed since
    images were first stored for it (named_schedules.REVISIONS), so no image of the old values answers for the new."""
    revision = REVISIONS.get(getattr(cfg, "schedule", None))
    return cfg.to_json() if revision is None else f"{cfg.to_json()}#schedule-revision-{revision}"


def reference_key(model, sample, cfg, precision):
    """Cache key of a reference image: model, prompt, seed, full config (guidance included), precision."""
    return _digest(model, sample.prompt, sample.seed, _config_key(cfg), precision)


@dataclass
class Reference:
    key: str
    image: object   # PIL
    unit: object    # (H, W, 3) float in [0, 1]


def stored_references(store, model_name, wanted, precision="fp32"):
    """{(sample, config): Reference} of the `wanted` pairs the store already holds (one query)."""
    from PIL import Image
    keys = {w: reference_key(model_name, *w, precision) for w in wanted}
    rows = store.references(keys.values())
    found = {}
    for w, key in keys.items():
        if key in rows:
            image = Image.open(store.path.parent / rows[key]["image"]).convert("RGB")
            found[w] = Reference(key, image, store.load_array(rows[key]["output"]))
    return found


def compute_references(model, model_name, wanted, precision="fp32", progress=None):
    """{(sample, config): (Reference, seconds per image)} for `wanted`, samples that miss the same
    configs in one batch (an 'off' and a 'paper' reference share it: the mode is per item). `progress(n)`: n more
    item-steps done."""
    by_cfg = {}
    for smp, cfg in wanted:
        by_cfg.setdefault(cfg, []).append(smp)
    by_samples = {}
    for cfg, smps in by_cfg.items():
        by_samples.setdefault(tuple(smps), []).append(cfg)
    out = {}
    for smps, cfgs in by_samples.items():
        started = time.perf_counter()
        outputs = sample_arms(model, cfgs, list(smps), precision=precision, progress=increments(progress))
        seconds = (time.perf_counter() - started) / (len(smps) * len(cfgs))
        for k, cfg in enumerate(cfgs):
            floats = model.decode_float(outputs[:, k])
            for smp, image, unit in zip(smps, to_pil(floats), unit_images(floats)):
                out[(smp, cfg)] = (Reference(reference_key(model_name, smp, cfg, precision), image, unit), seconds)
    return out


def record_references(store, model_name, computed, precision="fp32"):
    """Store computed references (PNG, float array, row); each one at most once."""
    for (smp, cfg), (ref, seconds) in computed.items():
        meta = {"model": model_name, "prompt": smp.prompt, "seed": smp.seed, "config": cfg.to_json(),
                "role": "reference", "precision": precision}
        store.record_reference(ref_key=ref.key, model=model_name, prompt=smp.prompt, seed=smp.seed,
                               config=cfg.to_json(), precision=precision, image=store.save_image(ref.image, meta),
                               output=store.save_array(ref.unit), seconds=seconds)


def ensure_references(store, model, model_name, samples, configs_by_sample, precision="fp32"):
    """{(sample, config): Reference}, computing and storing only what the store lacks.

    The cache key is (model, prompt, seed, config with its guidance, precision): a study, a sweep and
    the app share every reference they have in common.
    """
    wanted = [(smp, cfg) for smp in samples for cfg in configs_by_sample(smp)]
    found = stored_references(store, model_name, wanted, precision)
    computed = compute_references(model, model_name, [w for w in wanted if w not in found], precision)
    record_references(store, model_name, computed, precision)
    return {**found, **{k: ref for k, (ref, _) in computed.items()}}


def arm_key(model, sample, cfg, precision, noise_from=None):
    """Cache key of a sampled arm: a reference's key, plus the largest explicit sigma_max among the arms it was
    sampled with (None: the model's), which sets the Brownian noise's range (engine.noise_ceiling) and so the
    noise a stochastic sampler drew."""
    return _digest(model, sample.prompt, sample.seed, _config_key(cfg), precision, noise_from)


def noise_from(configs):
    """What of a set of arms decides their shared noise range: the largest explicit sigma_max (None: none set)."""
    explicit = [c.sigma_max for c in configs if c.sigma_max is not None]
    return max(explicit) if explicit else None


def stored_arms(store, model_name, wanted, precision="fp32", noise=None):
    """{(sample, config): the sampler's float output (a tensor)} of the `wanted` arms the store holds, sampled with
    noise range `noise` (noise_from of their arms)."""
    import torch
    keys = {w: arm_key(model_name, *w, precision, noise) for w in wanted}
    rows = store.arm_outputs(keys.values())
    return {w: torch.from_numpy(store.load_array(rows[key]["output"])) for w, key in keys.items() if key in rows}


def record_arms(store, model_name, outputs, precision="fp32", noise=None):
    """Keep sampled arm outputs {(sample, config): float tensor} for later studies (each key once)."""
    store.record_arm_outputs([{"arm_key": arm_key(model_name, smp, cfg, precision, noise), "model": model_name,
                               "prompt": smp.prompt, "seed": smp.seed, "config": cfg.to_json(), "precision": precision,
                               "output": store.save_array(out.numpy())} for (smp, cfg), out in outputs.items()])
