"""Models behind one interface: the embedded offline model; Stable Diffusion 1.x/2.x, SDXL, SD3/SD3.5 and Flux.1
through diffusers."""
from .embedded import PromptError  # noqa: F401 - the error a model raises for a prompt it cannot read
from .interface import Model  # noqa: F401 - what every model offers


def load_model(name="embedded", device=None, dtype=None, local_files_only=None):
    """'embedded' -> the offline default model; a diffusers folder or hub id -> SD 1.x/2.x, or SDXL, SD3/SD3.5 or
    Flux.1 when its model_index.json (`_class_name`) says so; a single .safetensors checkpoint -> through its config
    folder beside it, told apart by that folder's model_index.json."""
    if name == "embedded":
        from .embedded import EmbeddedModel

        return EmbeddedModel.load(device=device)
    if name == "embedded-flow":  # the embedded model's rectified-flow twin
        from .embedded_flow import EmbeddedFlowModel

        return EmbeddedFlowModel.load(device=device)
    from . import flux, sd3
    from .sdxl import StableDiffusionXLModel, checkpoint_index, is_sdxl, load_single_file, pipeline_index
    from .stable_diffusion import StableDiffusionModel

    if str(name).endswith((".safetensors", ".ckpt")):
        index = checkpoint_index(name)  # SD3 and Flux before SDXL: their indexes list a text_encoder_2 too
        if sd3.is_sd3(index):
            return sd3.load_single_file(name, device=device, dtype=dtype)
        if flux.is_flux(index):
            return flux.load_single_file(name, device=device, dtype=dtype)
        return load_single_file(name, device=device, dtype=dtype)
    index = pipeline_index(name, local_files_only)
    if sd3.is_sd3(index):
        return sd3.StableDiffusion3Model.load(name, device=device, dtype=dtype, local_files_only=local_files_only,
                                              index=index)
    if flux.is_flux(index):
        return flux.FluxModel.load(name, device=device, dtype=dtype, local_files_only=local_files_only, index=index)
    if is_sdxl(index):
        return StableDiffusionXLModel.load(name, device=device, dtype=dtype, local_files_only=local_files_only,
                                           index=index)
    return StableDiffusionModel.load(name, device=device, dtype=dtype, local_files_only=local_files_only)
