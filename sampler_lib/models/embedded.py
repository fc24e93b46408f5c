"""The embedded default model: a small class-conditional UNet on SD's 1000-step eps schedule."""
import json
import re
from pathlib import Path

import torch
from torch import nn

from ..model_sampling import EpsSampling
from ..schedules import scaled_linear_alphas_cumprod
from ..wrappers import DiscreteEpsDenoiser
from .guidance import check_guidance, guided_eps, to_pil
from .shapes import COLORS, NUM_CLASSES, SHAPES, classify, label_of
from .unet import UNet

WEIGHTS_DIR = Path(__file__).parent / "embedded"


class PromptError(ValueError):
    """A prompt the embedded model does not understand; the message lists the words it knows."""

def _clip(text, limit=80):
    """What an error message quotes of a user's text: at most 80 characters."""
    return text if len(text) <= limit else text[:limit] + "…"
ARTICLES = {"a", "an", "the"}

# Architecture trained by train_embedded (diffusers UNet2DModel); label NUM_CLASSES is the empty
# prompt, for guidance. The shipped weights load into the architecture their card records.
UNET_CONFIG = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
    block_out_channels=(32, 64, 96),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    num_class_embeds=NUM_CLASSES + 1, norm_num_groups=16, attention_head_dim=32,
)


def architecture(card):
    """The UNet2DModel keyword arguments a model card records (lists back to tuples)."""
    arch = {k: v for k, v in card["architecture"].items() if k not in ("class", "parameters")}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}


def build_unet(config=None):
    """A freshly initialised diffusers UNet2DModel of the given (default: UNET_CONFIG) architecture."""
    from diffusers import UNet2DModel  # a heavy import: training and tests only

    return UNet2DModel(**(UNET_CONFIG if config is None else config))


class GuidedEps(nn.Module):
    """The UNet as out(x, t; label) with classifier-free guidance (label NUM_CLASSES is the empty prompt): eps for the
    eps model, the velocity for the flow model (guidance is linear in either)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, labels, guidance_scale=1.0, with_uncond=False):
        labels = labels.to(x.device)
        return guided_eps(self.unet, x, t, labels, torch.full_like(labels, NUM_CLASSES), guidance_scale, with_uncond)


class ShapesModel:
    """What the embedded models share (the eps model, EmbeddedModel, and its flow twin,
    embedded_flow.EmbeddedFlowModel): the class-conditional UNet on the shapes data with guidance, its prompts,
    decoding and faithfulness check. A subclass gives its name, weights folder, trainer, model sampling
    (`sampling(card)`) and `denoiser`."""

    name = None
    weights_dir = None
    trainer = None  # the module that rebuilds the weights, named when they are missing

    def __init__(self, unet, card, device="cpu"):
        self.device = torch.device(device)
        self.eps = GuidedEps(unet.eval().requires_grad_(False).to(self.device))
        self.card = card
        self.model_sampling = self.sampling(card)
        size = card["architecture"]["sample_size"]
        self.latent_shape = (card["architecture"]["in_channels"], size, size)
        self.vocabulary = {"colors": dict(COLORS), "shapes": list(SHAPES)}

    def sampling(self, card):
        raise NotImplementedError

    @classmethod
    def load(cls, weights_dir=None, device=None):
        """Weights from the package; the GPU when there is one, else the CPU."""
        from safetensors.torch import load_file

        weights_dir = Path(weights_dir or cls.weights_dir)
        path = weights_dir / "model.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{cls.name} model weights missing at {path}; run "
                                    f"`python -m {cls.trainer}` to rebuild them")
        card = json.loads((weights_dir / "card.json").read_text())
        unet = UNet(**architecture(card))  # same modules and forward as diffusers', torch only
        unet.load_state_dict(load_file(path))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(unet, card, device)

    @property
    def network(self):
        return self.eps

    def parse(self, prompt):
        """'a red circle' -> (colour, shape); '' -> (None, None), the unconditional prompt."""
        words = [w for w in re.findall(r"[a-z]+|\S", prompt.lower()) if w not in ARTICLES]
        colour = shape = None
        for word in words:
            if word in COLORS and colour is None:
                colour = word
            elif word in SHAPES and shape is None:
                shape = word
            else:
                raise PromptError(f"prompt word {_clip(word)!r} is not understood; use one colour "
                                  f"({', '.join(COLORS)}) and one shape ({', '.join(SHAPES)}), "
                                  "e.g. 'a red circle'")
        if (colour is None) != (shape is None):
            raise PromptError(f"prompt {_clip(prompt)!r} needs both a colour ({', '.join(COLORS)}) and a shape "
                              f"({', '.join(SHAPES)}), e.g. 'a red circle'")
        return colour, shape

    def condition(self, prompt, guidance_scale=3.0):
        """extra_args for a sampler: the prompt's class label and the guidance scale, any batch size."""
        g = check_guidance(guidance_scale)
        colour, shape = self.parse(prompt)
        label = NUM_CLASSES if colour is None else label_of(colour, shape)
        return {"labels": torch.tensor([label]), "guidance_scale": g}

    def prompts(self):
        """Every prompt the model understands: one per (colour, shape)."""
        return [f"a {c} {s}" for c in COLORS for s in SHAPES]

    def decode_float(self, x):
        """Images in [-1, 1], (B, 3, H, W), before 8-bit rounding (the samples themselves)."""
        return x.float()

    def decode(self, x):
        """Samples in [-1, 1] to 8-bit RGB PIL images."""
        return to_pil(x)

    def faithful(self, prompt, image):
        """Whether the image shows the colour and shape the prompt asks for; None for the empty prompt."""
        colour, shape = self.parse(prompt)
        return None if colour is None else classify(image) == (colour, shape)


class EmbeddedModel(ShapesModel):
    """The offline default: prompts like 'a red circle', 32x32 RGB, eps-prediction, SD sigmas."""

    name = "embedded"
    weights_dir = WEIGHTS_DIR
    trainer = "sampler_lib.models.train_embedded"

    def __init__(self, unet, card, device="cpu"):
        self.alphas_cumprod = scaled_linear_alphas_cumprod()
        super().__init__(unet, card, device)

    def sampling(self, card):
        return EpsSampling(self.alphas_cumprod)  # SD's 1000-step eps schedule

    def denoiser(self, quantize="off"):
        """A DiscreteEpsDenoiser over the guided network (its model sampling: EpsSampling), with the given
        discretization mode."""
        return DiscreteEpsDenoiser(self.eps, self.alphas_cumprod, quantize=quantize).to(self.device)
