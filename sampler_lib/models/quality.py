"""Colour and shape faithfulness of the embedded models, eps and flow (the figures in their cards and BENCHMARKS.md)."""
import torch

from .. import SAMPLERS, SCHEDULES
from ..noise import initial_noise
from ..schedules import get_sigmas_karras
from .shapes import COLORS, SHAPES, classify


@torch.no_grad()
def generate(model, prompts, seeds, steps=25, guidance_scale=3.0, quantize="off", sampler="heun", schedule=None):
    """One image per (prompt, seed), all in one batch: Heun (or `sampler`, a SAMPLERS name) on the Karras schedule
    over the model's range, or on a flow model ComfyUI's default 'simple' (or `schedule`, a SCHEDULES name), from the
    model sampling's initial latent."""
    den = model.denoiser(quantize)
    sampling = model.model_sampling
    if schedule is None and sampling.kind != "flow":
        sigmas = get_sigmas_karras(steps, float(den.sigma_min), float(den.sigma_max), device=model.device)
    else:
        sigmas = SCHEDULES[schedule or "simple"](steps, sampling).to(model.device)
    labels = torch.cat([model.condition(p, guidance_scale)["labels"] for p in prompts])
    noise = torch.stack([initial_noise(model.latent_shape, s) for s in seeds]).to(model.device)
    x = sampling.initial_latent(noise, sigmas[0])
    out = SAMPLERS[sampler](den, x, sigmas, extra_args={"labels": labels, "guidance_scale": guidance_scale},
                            disable=True)
    return model.decode(out)


def faithfulness(model, per_colour=16, steps=25, guidance_scale=3.0, seed0=0, batch=64, sampler="heun",
                 schedule=None):
    """Share of samples whose dominant saturated colour / shape is the one asked for, per colour and shape (shapes
    cycled within a colour: every prompt at per_colour >= 4); sampler and schedule as `generate`'s."""
    jobs = [(c, SHAPES[i % len(SHAPES)], seed0 + k * per_colour + i)
            for k, c in enumerate(COLORS) for i in range(per_colour)]
    results = []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        images = generate(model, [f"a {c} {s}" for c, s, _ in chunk], [seed for *_, seed in chunk], steps,
                          guidance_scale, sampler=sampler, schedule=schedule)
        results += [(c, s, *classify(img)) for (c, s, _), img in zip(chunk, images)]
    colour = {c: sum(r[2] == c for r in results if r[0] == c) / per_colour for c in COLORS}
    shape = {s: sum(r[3] == s for r in results if r[1] == s) / sum(r[1] == s for r in results) for s in SHAPES}
    return {"colour": colour, "shape": shape,
            "colour_overall": sum(r[2] == r[0] for r in results) / len(results),
            "shape_overall": sum(r[3] == r[1] for r in results) / len(results), "samples": len(results)}
