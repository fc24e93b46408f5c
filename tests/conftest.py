import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from sampler_lib import scaled_linear_alphas_cumprod

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def load_kdiffusion():
    """k-diffusion 0.1.1.post1's sampling and external modules, without its heavy package __init__."""
    if "k_diffusion.sampling" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = pkg
    import k_diffusion.external
    import k_diffusion.sampling
    return k_diffusion.sampling, k_diffusion.external


@pytest.fixture(scope="session")
def sd_alphas_cumprod():
    return scaled_linear_alphas_cumprod()


def toy_eps(x, t, **_):
    """A smooth nonlinear stand-in for a network: eps depends on x and on the (fractional) timestep."""
    t = t.float()[:, None, None, None]
    return torch.tanh(x * (0.5 + t / 1000)) + 0.05 * torch.sin(t / 37.0)
