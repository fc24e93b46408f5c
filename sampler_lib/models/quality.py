"""Colour and shape faithfulness of the embedded model (the figures in its card and BENCHMARKS.md)."""
import torch

from ..noise import initial_noise
from ..samplers import sample_heun
from ..schedules import get_sigmas_karras
from .shapes import COLORS, SHAPES, classify


@torch.no_grad()
def generate(model, prompts, seeds, steps=25, guidance_scale=3.0, quantize="off"):
    """One image per (prompt, seed), all in one batch: Heun, Karras schedule over the model's range."""
    den = model.denoiser(quantize)
    sigmas = get_sigmas_karras(steps, float(den.sigma_min), float(den.sigma_max), device=model.device)
    labels = torch.cat([model.condition(p, guidance_scale)["labels"] for p in prompts])
    x = torch.stack([initial_noise(model.latent_shape, s) for s in seeds]).to(model.device) * sigmas[0]
    out = sample_heun(den, x, sigmas, extra_args={"labels": labels, "guidance_scale": guidance_scale},
                      disable=True)
    return model.decode(out)


def faithfulness(model, per_colour=16, steps=25, guidance_scale=3.0, seed0=0, batch=64):
    """Share of samples whose dominant saturated colour / shape is the one asked for, per colour and shape."""
    jobs = [(c, SHAPES[i % len(SHAPES)], seed0 + k * per_colour + i)
            for k, c in enumerate(COLORS) for i in range(per_colour)]
    results = []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        images = generate(model, [f"a {c} {s}" for c, s, _ in chunk], [seed for *_, seed in chunk], steps,
                          guidance_scale)
        results += [(c, s, *classify(img)) for (c, s, _), img in zip(chunk, images)]
    colour = {c: sum(r[2] == c for r in results if r[0] == c) / per_colour for c in COLORS}
    shape = {s: sum(r[3] == s for r in results if r[1] == s) / sum(r[1] == s for r in results) for s in SHAPES}
    return {"colour": colour, "shape": shape,
            "colour_overall": sum(r[2] == r[0] for r in results) / len(results),
            "shape_overall": sum(r[3] == r[1] for r in results) / len(results), "samples": len(results)}
