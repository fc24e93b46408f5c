"""The Lab facade the CLI's sweep and the app share: models, LPIPS and the results store behind one object."""
import threading

from sampler_lib.models import load_model

from ..core.config import CUSTOM, SamplerConfig, check_seed
from ..core.engine import Sample
from ..core.grid import REFERENCE
from ..core.metrics import LPIPS, pair_metrics
from ..core.pairs import run_pair
from ..core.references import ensure_references
from ..core.visibility import flip_map
from ..results.store import DEFAULT_PATH, ResultsStore


class Lab:
    """Runs pairs, measures them and records them; safe to share between threads."""

    def __init__(self, results=DEFAULT_PATH, lpips_weights=None, load=load_model):
        self.store = ResultsStore(results)
        self._lpips_weights = lpips_weights
        self._load = load
        self._models, self._lpips, self._lock = {}, None, threading.Lock()

    def model(self, name="embedded"):
        with self._lock:
            if name not in self._models:
                self._models[name] = self._load(name)
            return self._models[name]

    def lpips(self):
        with self._lock:
            if self._lpips is None:
                self._lpips = LPIPS(self._lpips_weights)
            return self._lpips

    def compare(self, prompt, seed, cfg_a, cfg_b, pairing=CUSTOM, model="embedded", reference=False,
                progress=None, shown_left=None):
        """Run, measure and store one pair; returns the stored row plus images and heat maps."""
        seed = check_seed(seed)
        m = self.model(model)
        metric = self.lpips()
        run = run_pair(m, cfg_a, cfg_b, prompt, seed, progress=progress)
        metrics, maps = pair_metrics(metric, run.a.image, run.b.image)
        maps["flip"] = flip_map(run.a.image, run.b.image)  # visibility's map, kept for the app's views
        metrics["flip_max"] = float(maps["flip"].max())
        ref_image = None
        if reference:
            # The study's reference cache: a sample's reference is computed once per results file.
            ref_cfg = SamplerConfig.from_dict({"guidance_scale": cfg_a.guidance_scale}, REFERENCE)
            sample = Sample(prompt, seed)
            ref_image = ensure_references(self.store, m, model, [sample], lambda s: [ref_cfg])[(sample, ref_cfg)].image
            metrics["lpips_a_ref"] = metric(run.a.image, ref_image)[0]
            metrics["lpips_b_ref"] = metric(run.b.image, ref_image)[0]
        common = {"model": model, "prompt": prompt, "seed": seed, "pairing": pairing}
        paths = [self.store.save_image(arm.image, {**common, "config": arm.config.to_json(),
                                                   "sigmas": arm.sigmas_used})
                 for arm in (run.a, run.b)]
        pair_id = self.store.record_pair(
            pairing=pairing, model=model, prompt=prompt, seed=seed, config_a=cfg_a, config_b=cfg_b,
            image_a=paths[0], image_b=paths[1], metrics=metrics, sigmas_a=run.a.sigmas_used,
            sigmas_b=run.b.sigmas_used, lockstep=run.lockstep, seconds=run.seconds, shown_left=shown_left)
        return {"pair_id": pair_id, "run": run, "metrics": metrics, "maps": maps, "reference": ref_image,
                "image_paths": [str(self.store.path.parent / p) for p in paths]}
