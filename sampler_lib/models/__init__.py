"""Models behind one interface: the embedded offline model, Stable Diffusion 1.x/2.x and SDXL through diffusers."""
from .embedded import PromptError  # noqa: F401 - the error a model raises for a prompt it cannot read
from .interface import Model  # noqa: F401 - what every model offers


def load_model(name="embedded", device=None, dtype=None, local_files_only=None):
    """'embedded' -> the offline default model; a diffusers folder or hub id -> SD 1.x/2.x, or SDXL when its
    model_index.json says so; a single .safetensors checkpoint -> through its config folder beside it."""
    if name == "embedded":
        from .embedded import EmbeddedModel

        return EmbeddedModel.load(device=device)
    from .sdxl import StableDiffusionXLModel, is_sdxl, load_single_file, pipeline_index
    from .stable_diffusion import StableDiffusionModel

    if str(name).endswith((".safetensors", ".ckpt")):
        return load_single_file(name, device=device, dtype=dtype)
    index = pipeline_index(name, local_files_only)
    if is_sdxl(index):
        return StableDiffusionXLModel.load(name, device=device, dtype=dtype, local_files_only=local_files_only,
                                           index=index)
    return StableDiffusionModel.load(name, device=device, dtype=dtype, local_files_only=local_files_only)
