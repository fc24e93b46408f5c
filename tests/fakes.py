"""A fast stand-in with the model interface, for tests that exercise plumbing rather than quality."""
import torch

from sampler_lib import DiscreteEpsDenoiser, scaled_linear_alphas_cumprod
from sampler_lib.models.guidance import check_guidance, to_pil


def cond_eps(x, t, bias=None, guidance_scale=1.0):
    t = t.float()[:, None, None, None]
    return torch.tanh(x * (0.5 + t / 1000)) + (0.0 if bias is None else bias * guidance_scale * 0.01)


class FakeModel:
    name = "fake"
    latent_shape = (3, 16, 16)
    vocabulary = {"colors": {"red": (255, 0, 0)}, "shapes": ["circle"]}
    card = {"name": "fake"}
    device = torch.device("cpu")
    network = None  # cond_eps is a plain function: nothing to compile

    def __init__(self):
        self.alphas_cumprod = scaled_linear_alphas_cumprod()

    def denoiser(self, quantize="off"):
        return DiscreteEpsDenoiser(cond_eps, self.alphas_cumprod, quantize=quantize)

    def condition(self, prompt, guidance_scale=3.0):
        g = check_guidance(guidance_scale)
        if any(w not in ("a", "red", "circle") for w in prompt.split()):
            raise ValueError(f"prompt {prompt!r}: unknown word")
        return {"bias": torch.tensor(float(len(prompt))), "guidance_scale": g}

    def decode_float(self, x):
        return x.float()

    def decode(self, x):
        return to_pil(x)

    def prompts(self):
        return ["a red circle"]

    def faithful(self, prompt, image):
        return None
