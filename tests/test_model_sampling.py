"""Model sampling in one place (#34 item 1): the protocol's three families (eps, v, flow), the wrappers that
delegate to it bit for bit, the models that expose it, and the engine that asks it."""
import math

import pytest
import torch

from comparisons.core.config import SamplerConfig, schedule
from comparisons.core.engine import Sample, sample_arms
from comparisons.core.pairs import arm_schedule
from sampler_lib import (
    QUANTIZE_MODES,
    SAMPLERS,
    SCHEDULES,
    BrownianNoiseSampler,
    Denoiser,
    DiscreteEpsDenoiser,
    DiscreteVDenoiser,
    EpsSampling,
    FlowSampling,
    ModelSampling,
    VSampling,
    flow_sampling_from_config,
    image_tokens,
    initial_noise,
)
from sampler_lib.models.interface import sampling_of
from tests.conftest import toy_eps
from tests.fakes import FakeModel

MODES = list(QUANTIZE_MODES) + [("off", "paper", "ingress")]


def toy_velocity(x, t, **_):
    """A smooth stand-in for a flow network: v depends on x and on the (continuous) timestep in 0..1000."""
    t = t.float()[:, None, None, None]
    return torch.tanh(x * (0.5 + t / 1000)) - 0.3 * torch.cos(t / 137.0)


def batch(n=3, seed=0):
    return torch.stack([initial_noise((2, 4, 4), seed + i) for i in range(n)])


# --- eps and v: the wrappers delegate, bit for bit -----------------------------------------------------------------

@pytest.mark.parametrize("cls, sampling", [(DiscreteEpsDenoiser, EpsSampling), (DiscreteVDenoiser, VSampling)])
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_discrete_wrappers_are_a_denoiser_over_their_model_sampling(cls, sampling, mode, sd_alphas_cumprod):
    legacy = cls(toy_eps, sd_alphas_cumprod, quantize=mode)
    generic = Denoiser(toy_eps, sampling(sd_alphas_cumprod), quantize=mode)
    assert type(legacy.model_sampling) is sampling and legacy.model_sampling.kind == sampling.kind
    assert torch.equal(legacy.sigmas, generic.sigmas) and torch.equal(legacy.log_sigmas, generic.log_sigmas)
    sigma = torch.tensor([14.6, 0.71, 0.0292])
    x = batch()
    assert torch.equal(legacy(x, sigma), generic(x, sigma))
    assert torch.equal(legacy.round_sigma(sigma), generic.round_sigma(sigma))
    for m in QUANTIZE_MODES:
        assert torch.equal(legacy.sigma_to_t(sigma, mode=m), generic.sigma_to_t(sigma, mode=m))
        assert torch.equal(legacy.sigma_to_t(sigma, mode=m), legacy.model_sampling.sigma_to_t(sigma, mode=m))


def test_eps_and_v_formulas(sd_alphas_cumprod):
    """ComfyUI's EPS / V_PREDICTION (sigma_data 1) written down."""
    x, out, sigma = batch(), batch(seed=7), torch.tensor([3.0, 0.5, 0.1])
    s = sigma[:, None, None, None]
    eps, v = EpsSampling(sd_alphas_cumprod), VSampling(sd_alphas_cumprod)
    for ms in (eps, v):
        assert torch.equal(ms.calculate_input(sigma, x), x / (s ** 2 + 1) ** 0.5)
        assert torch.equal(ms.noise_scaling(sigma, out, x), out * s + x)
        assert torch.equal(ms.initial_latent(out, sigma), out * s)
    assert torch.equal(eps.calculate_denoised(sigma, out, x), x - s * out)
    torch.testing.assert_close(v.calculate_denoised(sigma, out, x), x / (s ** 2 + 1) - out * s / (s ** 2 + 1) ** 0.5)


def test_discrete_grid_and_timesteps(sd_alphas_cumprod):
    ms = EpsSampling(sd_alphas_cumprod)
    expected = ((1 - sd_alphas_cumprod) / sd_alphas_cumprod) ** 0.5
    assert torch.equal(ms.sigmas, expected) and ms.sigma_min == expected[0] and ms.sigma_max == expected[-1]
    sigma = torch.tensor([14.0, 1.0, 0.05], dtype=torch.float64)
    # ComfyUI's ModelSamplingDiscrete.timestep: argmin |log sigma - log_sigmas|; .sigma: log-linear interpolation.
    comfy_t = (sigma.log()[None] - ms.log_sigmas.double()[:, None]).abs().argmin(0)
    assert torch.equal(ms.timestep(sigma), comfy_t.double())
    assert torch.equal(ms.sigma_to_t(sigma, mode="ingress"), comfy_t.float())
    t = torch.tensor([0.0, 10.25, 998.5], dtype=torch.float64)
    log = ms.sigmas.double().log()
    comfy_sigma = ((1 - t.frac()) * log[t.floor().long()] + t.frac() * log[t.ceil().long()]).exp()
    torch.testing.assert_close(ms.sigma(t), comfy_sigma, rtol=0, atol=0)
    torch.testing.assert_close(ms.t_to_sigma(ms.sigma_to_t(sigma.float())), sigma.float(), rtol=1e-5, atol=0)


# --- flow ----------------------------------------------------------------------------------------------------------

def test_flow_training_grid_and_shifts():
    plain = FlowSampling()
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.equal(plain.sigmas, t.float()) and plain.sigma_max == 1 and plain.sigma_min == torch.tensor(0.001)
    sd3 = FlowSampling(shift=3.0)
    torch.testing.assert_close(sd3.sigmas, (3 * t / (1 + 2 * t)).float(), rtol=0, atol=0)
    flux = FlowSampling(mu=1.15)
    torch.testing.assert_close(flux.sigmas, (math.exp(1.15) / (math.exp(1.15) + (1 / t - 1))).float(), rtol=0, atol=0)
    fine = FlowSampling(mu=0.5, timesteps=10000)
    assert len(fine.sigmas) == 10000 and fine.sigma_max == 1
    for ms in (plain, sd3, flux, fine):
        assert ms.kind == "flow" and bool((ms.sigmas[1:] > ms.sigmas[:-1]).all()) and bool((ms.sigmas > 0).all())


def test_flow_parameterisation():
    """ComfyUI's CONST written down: input x, denoised x - sigma*v, noising sigma*noise + (1 - sigma)*latent."""
    ms = FlowSampling(shift=3.0)
    x, out, sigma = batch(), batch(seed=7), torch.tensor([1.0, 0.5, 0.1])
    s = sigma[:, None, None, None]
    assert ms.calculate_input(sigma, x) is x
    assert torch.equal(ms.calculate_denoised(sigma, out, x), x - s * out)
    assert torch.equal(ms.noise_scaling(sigma, out, x), s * out + (1 - s) * x)
    assert torch.equal(ms.initial_latent(out, torch.ones(3)), out)  # pure noise at sigma 1
    assert torch.equal(ms.initial_latent(out, sigma), ms.noise_scaling(sigma, out, torch.zeros_like(out)))


def test_flow_timesteps_per_mode():
    """The network's timestep is sigma * 1000, continuous in 'off', the nearest training sigma's when rounding."""
    ms = FlowSampling()
    sigma = torch.tensor([1.0, 0.5004, 0.25061, 0.0012])
    torch.testing.assert_close(ms.sigma_to_t(sigma, mode="off"), sigma * 1000)
    for mode in ("ingress", "paper"):
        assert torch.equal(ms.sigma_to_t(sigma, mode=mode), torch.tensor([1000.0, 500.0, 251.0, 1.0]))
    torch.testing.assert_close(ms.quantize_sigma(sigma), torch.tensor([1.0, 0.5, 0.251, 0.001]))
    assert ms.quantize_sigma(torch.tensor([0.0])) == 0
    torch.testing.assert_close(ms.t_to_sigma(ms.sigma_to_t(sigma)), sigma)
    shifted = FlowSampling(shift=3.0)
    on = shifted.quantize_sigma(torch.tensor([0.6, 0.05]))
    assert bool(torch.isin(on, shifted.sigmas).all())
    torch.testing.assert_close(shifted.sigma_to_t(torch.tensor([0.6, 0.05]), "ingress"), on * 1000)
    with pytest.raises(ValueError, match="mode must be one of off, ingress, paper"):
        ms.sigma_to_t(sigma, mode=True)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_flow_denoiser(mode):
    ms = FlowSampling(shift=3.0)
    den = Denoiser(toy_velocity, ms, quantize=mode)
    assert den.model_sampling is not ms and torch.equal(den.sigmas, ms.sigmas)  # its own copy: .to() moves only it
    x, sigma = batch(), torch.tensor([0.9, 0.4003, 0.01])
    modes = (mode,) * 3 if isinstance(mode, str) else mode
    snapped = torch.stack([ms.quantize_sigma(s) if m == "paper" else s for s, m in zip(sigma, modes)])
    t = torch.stack([ms.sigma_to_t(s, mode=m) for s, m in zip(sigma, modes)])
    s = snapped[:, None, None, None]
    assert torch.equal(den(x, sigma), x - s * toy_velocity(x, t))
    assert torch.equal(den.round_sigma(sigma), torch.where(torch.tensor([m == "paper" for m in modes]),
                                                           ms.quantize_sigma(sigma), sigma))


def test_euler_on_an_exact_flow_lands_on_the_data():
    """A one-point data set x0: the exact velocity is (x - x0) / sigma, so every deterministic sampler's denoised is
    x0 and Euler on any flow schedule ends on it."""
    x0 = batch(seed=11)

    def exact(x, t):
        return (x - x0) / (t / 1000)[:, None, None, None]

    den = Denoiser(exact, FlowSampling(shift=3.0))
    sigmas = torch.tensor([1.0, 0.8, 0.3, 0.05, 0.0])
    noise = batch(seed=3)
    for name in ("euler", "heun", "dpmpp_2m", "lms"):
        out = SAMPLERS[name](den, den.model_sampling.initial_latent(noise, sigmas[0]), sigmas, disable=True)
        torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)


def test_flow_sampling_refuses_bad_parameters():
    for kwargs, message in (({"shift": 0.0}, "shift must be"), ({"shift": float("nan")}, "shift must be"),
                            ({"timesteps": 1}, "timesteps"), ({"multiplier": 0}, "multiplier"),
                            ({"shift_type": "cubic", "mu": 1.0}, "shift type"),
                            ({"mu": 1.0, "shift_type": "constant"}, "not both")):
        with pytest.raises(ValueError, match=message):
            FlowSampling(**kwargs)


# --- the models expose it; the engine, pairs and specs ask it ------------------------------------------------------

def test_models_expose_their_model_sampling():
    from sampler_lib.models import load_model

    model = load_model("embedded", device="cpu")
    assert isinstance(model.model_sampling, EpsSampling) and sampling_of(model) is model.model_sampling
    assert torch.equal(model.model_sampling.sigmas, model.denoiser("off").sigmas)
    fake = FakeModel()  # a model without the attribute: its denoiser's, until it has one
    assert isinstance(sampling_of(fake), ModelSampling)
    assert torch.equal(sampling_of(fake).sigmas, fake.denoiser("off").sigmas)


def test_schedule_on_a_model_sampling_equals_on_its_sigmas(sd_alphas_cumprod):
    ms = EpsSampling(sd_alphas_cumprod)
    for name in ("karras", "normal", "simple", "beta", "sgm_uniform", "linear_quadratic", "kl_optimal",
                 "align_your_steps", "diffusers_trailing"):
        for cfg in (SamplerConfig(schedule=name, steps=10), SamplerConfig(schedule=name, steps=7, final_zero=False)):
            assert torch.equal(schedule(cfg, ms), schedule(cfg, ms.sigmas)), name


class FlowFake(FakeModel):
    """FakeModel on a flow model sampling: a velocity network, x = (1 - sigma)*x0 + sigma*noise."""

    name = "fake-flow"

    def __init__(self, shift=3.0):
        super().__init__()
        self.model_sampling = FlowSampling(shift=shift)

    def denoiser(self, quantize="off"):
        def velocity(x, t, bias=None, guidance_scale=1.0):
            return toy_velocity(x, t) + 0.01 * bias

        return Denoiser(velocity, self.model_sampling, quantize=quantize)


def test_engine_samples_a_flow_model_from_its_model_sampling():
    model = FlowFake()
    cfgs = [SamplerConfig(sampler="euler", steps=6, schedule="simple", quantize=q) for q in ("off", "paper")] + \
        [SamplerConfig(sampler="heun", steps=4, schedule="normal")]
    out = sample_arms(model, cfgs, [Sample("a red circle", 5)])
    extra = model.condition("a red circle")
    for k, cfg in enumerate(cfgs):
        sigmas = schedule(cfg, model.model_sampling)
        assert float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0
        noise = initial_noise(model.latent_shape, 5)[None]
        den = model.denoiser(cfg.quantize)
        alone = SAMPLERS[cfg.sampler](den, noise * sigmas[0], sigmas, extra_args=extra, disable=True,
                                      noise_sampler=BrownianNoiseSampler(noise, [5], 1.5))
        torch.testing.assert_close(out[0, k], alone[0], rtol=1e-6, atol=1e-6)
    sigmas, used, on_grid = arm_schedule(model, cfgs[1])
    assert used == on_grid and all(s in model.model_sampling.sigmas.tolist() or s == 0 for s in on_grid)


def test_flow_config_from_a_diffusers_scheduler_config():
    sd3 = flow_sampling_from_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                                     "shift": 3.0})
    assert sd3.card() == {"kind": "flow", "timesteps": 1000, "multiplier": 1000.0, "shift": 3.0}
    flux_config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
                   "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
                   "max_image_seq_len": 4096}
    assert image_tokens(1024, 1024) == 4096 and image_tokens(512, 512) == 1024 and image_tokens(256, 256) == 256
    assert flow_sampling_from_config(flux_config, image_tokens(1024, 1024)).mu == pytest.approx(1.15)
    assert flow_sampling_from_config(flux_config, image_tokens(256, 256)).mu == pytest.approx(0.5)
    assert flow_sampling_from_config(flux_config, 1024).mu == pytest.approx(0.5 + 0.65 * 768 / 3840)
    assert flow_sampling_from_config({**flux_config, "base_shift": None}, 256).mu == pytest.approx(0.5)
    with pytest.raises(ValueError, match="image_tokens"):
        flow_sampling_from_config(flux_config)
    for key, value in (("invert_sigmas", True), ("shift_terminal", 0.1)):
        with pytest.raises(ValueError, match=key):
            flow_sampling_from_config({**flux_config, key: value}, 4096)
    assert flow_sampling_from_config({}).card()["shift"] == 1.0


class _DeviceReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ops that make the host wait for the device: reading a value or a data-dependent shape."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.READS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2", "dpmpp_2m", "lms", "ipndm", "uni_pc"])
@pytest.mark.parametrize("quantize", ["paper", ("paper", "ingress")], ids=str)
def test_no_step_of_a_flow_denoiser_waits_on_the_device(name, quantize, monkeypatch):
    """The flow model sampling's rounding and timesteps add no device read per step (ARCHITECTURE.md)."""
    ms = FlowSampling(shift=3.0)

    def reads(steps):
        den = Denoiser(toy_velocity, ms, quantize=quantize)
        sigmas = SCHEDULES["simple"](steps, ms)
        x = ms.initial_latent(batch(2), sigmas[0])
        counted, tolist = _DeviceReads(), torch.Tensor.tolist
        monkeypatch.setattr(torch.Tensor, "tolist",
                            lambda t: (setattr(counted, "count", counted.count + 1), tolist(t))[1])
        with counted:
            out = SAMPLERS[name](den, x, sigmas, disable=True)
        monkeypatch.undo()
        assert torch.isfinite(out).all()
        return counted.count

    assert reads(4) == reads(12)
