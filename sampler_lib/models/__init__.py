"""Models behind one interface: the embedded offline model and Stable Diffusion through diffusers."""
from .embedded import PromptError  # noqa: F401 - the error a model raises for a prompt it cannot read
from .interface import Model  # noqa: F401 - what every model offers


def load_model(name="embedded", device=None, dtype=None, local_files_only=None):
    """'embedded' -> the offline default model; anything else -> a diffusers SD 1.x/2.x pipeline."""
    if name == "embedded":
        from .embedded import EmbeddedModel

        return EmbeddedModel.load(device=device)
    from .stable_diffusion import StableDiffusionModel

    return StableDiffusionModel.load(name, device=device, dtype=dtype, local_files_only=local_files_only)
