"""Pieces every model shares: classifier-free guidance in one batched forward, and decoding to PIL."""
import torch


class NoUncond(ValueError):
    """A CFG++ sampler asked for the unconditional prediction of a network that has none (Flux.1's)."""


def check_guidance(guidance_scale):
    """Classifier-free guidance scale: a finite number >= 0 (1 = no guidance)."""
    g = float(guidance_scale)
    if not g >= 0 or g == float("inf"):
        raise ValueError(f"guidance_scale must be a finite number >= 0 (got {guidance_scale}); "
                         "1 means no guidance, 3 to 7 is usual")
    return g


def guided_eps(net, x, t, cond, uncond, guidance_scale, with_uncond=False):
    """Ho & Salimans (2022): eps_u + w (eps_c - eps_u), cond and uncond in one batch of 2B. A condition is a tensor
    (SD's text embedding) or a tuple of tensors (SDXL's embedding, pooled embedding and time ids), each batched
    alike. `with_uncond` (what a CFG++ sampler asks through `Denoiser.denoised_and_uncond`): (guided, eps_u) from
    that one call, the 2B batch run at scale 1 too (ComfyUI's disable_cfg1_optimization)."""
    b = x.shape[0]
    t = t.expand(b)
    widen = lambda c: c.expand(b, *c.shape[1:])  # noqa: E731
    cond = tuple(map(widen, cond)) if isinstance(cond, tuple) else widen(cond)
    if guidance_scale == 1.0 and not with_uncond:
        return net(x, t, cond)
    uncond = tuple(map(widen, uncond)) if isinstance(uncond, tuple) else widen(uncond)
    both = (tuple(torch.cat(pair) for pair in zip(cond, uncond)) if isinstance(cond, tuple)
            else torch.cat([cond, uncond]))
    eps_cond, eps_uncond = net(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
    guided = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    return (guided, eps_uncond) if with_uncond else guided


def cast(out, dtype):
    """A network's output, or guided_eps's (guided, uncond) pair, in `dtype`."""
    return tuple(o.to(dtype) for o in out) if isinstance(out, tuple) else out.to(dtype)


def to_pil(images):
    """Images in [-1, 1], (B, 3, H, W), to 8-bit RGB PIL images."""
    from PIL import Image

    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).cpu().numpy()]
