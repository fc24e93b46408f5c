"""The one interface every model offers the rest of the project (the embedded model, Stable Diffusion, test
fakes): what the engine, the studies and the app may rely on, checked by tests instead of probed by hasattr."""
from typing import Protocol, runtime_checkable


@runtime_checkable
class Model(Protocol):
    name: str              # 'embedded', or the diffusers id / folder it was loaded from
    latent_shape: tuple    # (C, H, W) of one sample, the shape initial noise is drawn in
    card: dict             # what the model is, stored with results

    @property
    def device(self):
        """The torch device its network runs on (samples are moved there)."""

    @property
    def network(self):
        """The guided network module every denoiser calls: what `torch.compile` wraps."""

    # The model's sampler_lib.model_sampling.ModelSampling (EpsSampling, VSampling, FlowSampling): its training
    # sigmas (ascending), sigma_min / sigma_max, the timestep in each discretization mode, the network's input and
    # the denoised image, noise_scaling / initial_latent. Everything that needs the model's sigmas asks it (through
    # `sampling_of`), never a denoiser.
    model_sampling: object

    def denoiser(self, quantize="off"):
        """A denoiser `D(x, sigma, **condition)` over the model's model sampling, in one quantize mode or one per
        batch item."""

    def condition(self, prompt, guidance_scale):
        """The sampler's extra_args for a prompt and a guidance scale (PromptError for an unreadable prompt)."""

    def decode_float(self, x):
        """Samples to images in [-1, 1], (B, 3, H, W), before 8-bit rounding."""

    def decode(self, x):
        """Samples to 8-bit RGB PIL images."""

    def prompts(self):
        """Every prompt the model understands (a fixed vocabulary), or None when it reads free text."""

    def faithful(self, prompt, image):
        """Whether an image shows what the prompt asks for; None when the model cannot judge it."""


def sampling_of(model):
    """The model's ModelSampling (`model.model_sampling`): what the engine, the schedules, pairs and studies ask for
    the training sigmas, the starting latent and the time maps."""
    return model.model_sampling
