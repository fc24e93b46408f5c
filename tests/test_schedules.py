import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sampler_lib import (
    DiscreteEpsDenoiser,
    discretize_sigmas,
    get_sigmas_exponential,
    get_sigmas_karras,
    get_sigmas_polyexponential,
    penultimate_sigma_min,
)
from tests.conftest import load_kdiffusion


@pytest.fixture(scope="module")
def sd(sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(lambda x, t: x, sd_alphas_cumprod)
    return den, float(den.sigma_min), float(den.sigma_max)


def close(actual, expected):
    assert actual.tolist() == pytest.approx(expected, abs=1e-4)


def test_sd_sigma_range(sd):
    den, lo, hi = sd
    assert lo == pytest.approx(0.0292, abs=5e-5) and hi == pytest.approx(14.6146, abs=5e-5)
    assert len(den.sigmas) == 1000


def test_design_reference_figures(sd):
    den, lo, hi = sd
    s8 = get_sigmas_karras(8, lo, hi, append_zero=False)
    close(s8, [14.6146, 7.9029, 4.0277, 1.9104, 0.8289, 0.3211, 0.1072, 0.0292])
    close(discretize_sigmas(s8[:7], den.sigmas), [14.6146, 7.9216, 4.0300, 1.9103, 0.8299, 0.3213, 0.1072])
    s7 = get_sigmas_karras(7, lo, hi)
    close(s7, [14.6146, 7.0944, 3.1686, 1.2741, 0.4469, 0.1303, 0.0292, 0])
    close(discretize_sigmas(s7, den.sigmas), [14.6146, 7.0796, 3.1667, 1.2721, 0.4471, 0.1308, 0.0292, 0])
    assert penultimate_sigma_min(8, lo, hi) == pytest.approx(0.1072, abs=1e-4)
    close(get_sigmas_karras(7, penultimate_sigma_min(8, lo, hi), hi),
          [14.6146, 7.9029, 4.0277, 1.9104, 0.8289, 0.3211, 0.1072, 0])
    p7 = penultimate_sigma_min(7, lo, hi)
    assert p7 == pytest.approx(0.1303, abs=1e-4)
    s = get_sigmas_karras(7, p7, hi)
    close(s, [14.6146, 8.0451, 4.1888, 2.0392, 0.9141, 0.3692, 0.1303, 0])
    close(discretize_sigmas(s, den.sigmas)[1:6], [8.0461, 4.1878, 2.0402, 0.9136, 0.3687])
    assert float(discretize_sigmas(s, den.sigmas)[6]) == pytest.approx(0.1308, abs=1e-4)


def test_schedules_match_k_diffusion():
    kd, _ = load_kdiffusion()
    for n in (1, 2, 7, 50):
        assert torch.allclose(get_sigmas_karras(n, 0.03, 14.6), kd.get_sigmas_karras(n, 0.03, 14.6), rtol=1e-5)
        assert torch.allclose(get_sigmas_exponential(n, 0.03, 14.6), kd.get_sigmas_exponential(n, 0.03, 14.6))
        assert torch.allclose(get_sigmas_polyexponential(n, 0.03, 14.6, rho=2.0),
                              kd.get_sigmas_polyexponential(n, 0.03, 14.6, rho=2.0))


def test_discretize_keeps_zero_and_only_uses_grid(sd):
    den, lo, hi = sd
    s = discretize_sigmas(get_sigmas_karras(30, 0.01, 40.0), den.sigmas)
    assert float(s[-1]) == 0.0
    assert all(float(v) in set(den.sigmas.tolist()) for v in s[:-1])
    # Out-of-range sigmas snap to the ends of the grid.
    assert float(s[0]) == float(den.sigmas[-1]) and float(s[-2]) == float(den.sigmas[0])


def test_round_sigma_matches_argmin(sd):
    den, _, _ = sd
    sigmas = torch.exp(torch.linspace(math.log(0.02), math.log(20), 5001))
    argmin = (sigmas.log()[None] - den.log_sigmas[:, None]).abs().argmin(0)
    assert torch.equal(den.quantize_sigma(sigmas), den.sigmas[argmin])


schedule_args = dict(
    n=st.integers(1, 300),
    sigma_min=st.floats(1e-3, 1.0),
    span=st.floats(1.01, 1e3),
)


@settings(max_examples=150, deadline=None)
@given(**schedule_args, rho=st.floats(0.5, 12.0), kind=st.sampled_from(["karras", "exp", "poly"]),
       zero=st.booleans())
def test_schedule_properties(n, sigma_min, span, rho, kind, zero):
    sigma_max = sigma_min * span
    if kind == "karras":
        s = get_sigmas_karras(n, sigma_min, sigma_max, rho=rho, append_zero=zero)
    elif kind == "exp":
        s = get_sigmas_exponential(n, sigma_min, sigma_max, append_zero=zero)
    else:
        s = get_sigmas_polyexponential(n, sigma_min, sigma_max, rho=rho, append_zero=zero)
    assert s.dtype == torch.float32 and len(s) == n + int(zero)
    assert torch.isfinite(s).all()
    ramp = s[:-1] if zero else s
    if zero:
        assert float(s[-1]) == 0.0
    assert (ramp[1:] <= ramp[:-1]).all()
    tol = 1e-5 * sigma_max
    assert float(ramp.max()) <= sigma_max + tol and float(ramp.min()) >= sigma_min * (1 - 1e-5)
    assert float(ramp[0]) == pytest.approx(sigma_max, rel=1e-5)
    if n > 1:
        assert float(ramp[-1]) == pytest.approx(sigma_min, rel=1e-4)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 300), sigma_min=st.floats(1e-3, 1.0), span=st.floats(1.01, 1e3))
def test_penultimate_sigma_min_is_inside(n, sigma_min, span):
    sigma_max = sigma_min * span
    p = penultimate_sigma_min(n, sigma_min, sigma_max)
    assert sigma_min * (1 - 1e-5) <= p <= sigma_max * (1 + 1e-5)
    if n > 2:
        assert p > sigma_min


@pytest.mark.parametrize("args, message", [
    ((0, 0.1, 10.0), "n must be"),
    ((2.5, 0.1, 10.0), "n must be"),
    ((5, 0.0, 10.0), "sigma_min must be > 0"),
    ((5, -1.0, 10.0), "sigma_min must be > 0"),
    ((5, 10.0, 10.0), "smaller than sigma_max"),
    ((5, 11.0, 10.0), "smaller than sigma_max"),
    ((5, float("nan"), 10.0), "finite"),
    ((5, 0.1, float("inf")), "finite"),
])
def test_bad_schedule_arguments(args, message):
    for fn in (get_sigmas_karras, get_sigmas_exponential, get_sigmas_polyexponential):
        with pytest.raises(ValueError, match=message):
            fn(*args)


@pytest.mark.parametrize("rho", [0.0, -1.0, float("nan")])
def test_bad_rho(rho):
    with pytest.raises(ValueError, match="rho"):
        get_sigmas_karras(5, 0.1, 10.0, rho=rho)


def test_penultimate_needs_two_points():
    with pytest.raises(ValueError, match="n must be >= 2"):
        penultimate_sigma_min(1, 0.1, 10.0)


def test_discretize_rejects_nan(sd):
    den, _, _ = sd
    with pytest.raises(ValueError, match="finite"):
        discretize_sigmas(torch.tensor([1.0, float("nan")]), den.sigmas)
