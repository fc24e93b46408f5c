"""The embedded flow model: the embedded eps model's flow-matching twin (rectified flow, the velocity noise - x0, on
the 1000-step flow grid t/1000), same shapes data, UNet, prompts and faithfulness check; `--model embedded-flow`."""
from pathlib import Path

from ..model_sampling import FlowSampling
from ..wrappers import Denoiser
from .embedded import ShapesModel

WEIGHTS_DIR = Path(__file__).parent / "embedded_flow"


class EmbeddedFlowModel(ShapesModel):
    """Prompts like 'a red circle', 32x32 RGB, rectified flow: sigmas shift(t / 1000) for t = 1..1000, the network's
    timestep sigma * 1000, denoised = x - sigma * v (ComfyUI's CONST / ModelSamplingDiscreteFlow); the shift is the
    card's."""

    name = "embedded-flow"
    weights_dir = WEIGHTS_DIR
    trainer = "sampler_lib.models.train_embedded_flow"

    def sampling(self, card):
        schedule = card["schedule"]
        return FlowSampling(shift=schedule.get("shift", 1.0), timesteps=schedule.get("num_train_timesteps", 1000),
                            multiplier=schedule.get("multiplier", 1000))

    def denoiser(self, quantize="off"):
        """A Denoiser over the guided network and the model's FlowSampling, in the given discretization mode (or one
        per batch item)."""
        return Denoiser(self.eps, self.model_sampling, quantize).to(self.device)
