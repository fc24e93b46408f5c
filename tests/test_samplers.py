import math

import pytest
import torch

from comparisons.core.config import STOCHASTIC  # the samplers that draw fresh noise
from sampler_lib import (
    SAMPLERS,
    BaseModelWrapper,
    BrownianNoiseSampler,
    DiscreteEpsDenoiser,
    DiscreteVDenoiser,
    discretize_sigmas,
    get_sigmas_karras,
    initial_noise,
    round_sigmas,
)
from tests.conftest import load_kdiffusion, toy_eps


def schedule(den, n=8, zero=True):
    return get_sigmas_karras(n, float(den.sigma_min), float(den.sigma_max), append_zero=zero)


def start(den, batch=2, seed=0):
    return torch.stack([initial_noise((3, 8, 8), seed + i) for i in range(batch)]) * float(den.sigma_max)


# Every sampler k-diffusion 0.1.1 also has with a sigmas argument (ddim is not there: it is checked against diffusers
# below; dpm_fast and dpm_adaptive take sigma_min, sigma_max: tests/test_more_samplers.py).
SHARED = sorted(n for n in SAMPLERS if hasattr(load_kdiffusion()[0], "sample_" + n)
                and n not in ("dpm_fast", "dpm_adaptive"))


@pytest.mark.parametrize("name", SHARED)
@pytest.mark.parametrize("quantize", ["off", "ingress"])
@pytest.mark.parametrize("wrapper", ["eps", "v"])
@pytest.mark.parametrize("zero", [True, False])
def test_matches_k_diffusion(name, quantize, wrapper, zero, sd_alphas_cumprod):
    kd, ext = load_kdiffusion()
    ours_cls, theirs_cls = {"eps": (DiscreteEpsDenoiser, ext.DiscreteEpsDDPMDenoiser),
                            "v": (DiscreteVDenoiser, ext.DiscreteVDDPMDenoiser)}[wrapper]
    ours = ours_cls(toy_eps, sd_alphas_cumprod, quantize=quantize)
    theirs = theirs_cls(toy_eps, sd_alphas_cumprod, quantize=quantize == "ingress")
    sigmas = schedule(ours, 10, zero)
    x = start(ours)
    kwargs = {}
    if name in STOCHASTIC:
        kwargs["noise_sampler"] = BrownianNoiseSampler(x, [1, 2], float(ours.sigma_max))
    expected = getattr(kd, "sample_" + name)(theirs, x, sigmas, disable=True, **kwargs)
    actual = SAMPLERS[name](ours, x, sigmas, disable=True, **kwargs)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, rtol=2e-5, atol=2e-5)


WINDOWED_NOISE = {name for name in SAMPLERS if SAMPLERS[name].__name__.startswith("sample_sa_solver")}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_plain_callable_works_and_per_item_schedules_equal_separate_runs(name, sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    a = schedule(den, 7)
    b = get_sigmas_karras(8, float(den.sigma_min), float(den.sigma_max), append_zero=False)
    x = start(den)
    ns = lambda seeds: BrownianNoiseSampler(x[: len(seeds)], seeds, 15.0)  # noqa: E731
    both = SAMPLERS[name](den, x, torch.stack([a, b], 1), disable=True, noise_sampler=ns([5, 5]))
    only_a = SAMPLERS[name](den, x[:1], a, disable=True, noise_sampler=ns([5]))
    only_b = SAMPLERS[name](den, x[1:], b, disable=True, noise_sampler=ns([5]))
    torch.testing.assert_close(both, torch.cat([only_a, only_b]), rtol=1e-5, atol=1e-5)
    bare = lambda x, s: den(x, s)  # noqa: E731
    if name in WINDOWED_NOISE:
        # Its noise window is a share of the model's timesteps: a bare callable has none, so it is refused with
        # noise and runs without (eta 0).
        with pytest.raises(ValueError, match="model_sampling"):
            SAMPLERS[name](bare, x[:1], a, disable=True, noise_sampler=ns([5]))
        only_a = SAMPLERS[name](den, x[:1], a, disable=True, noise_sampler=ns([5]), eta=0.0)
        plain = SAMPLERS[name](bare, x[:1], a, disable=True, noise_sampler=ns([5]), eta=0.0)
    else:
        plain = SAMPLERS[name](bare, x[:1], a, disable=True, noise_sampler=ns([5]))
    torch.testing.assert_close(plain, only_a, rtol=0, atol=0)


class Gaussian:
    """Data ~ N(0, s^2): ideal denoiser x s^2/(s^2 + sigma^2); the ODE keeps x/sqrt(s^2+sigma^2) fixed."""

    def __init__(self, s=1.0):
        self.s2 = s * s

    def __call__(self, x, sigma):
        return x * self.s2 / (self.s2 + sigma[:, None] ** 2)

    def exact(self, x, sigma_from, sigma_to):
        return x * math.sqrt((self.s2 + sigma_to ** 2) / (self.s2 + sigma_from ** 2))


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2), ("dpm_2", 2)])
def test_convergence_order_on_exact_solution(name, order):
    model = Gaussian(0.7)
    x = torch.tensor([[1.3], [-0.4]], dtype=torch.float64)
    exact = model.exact(x, 20.0, 0.1)
    errors = []
    for n in (16, 32, 64):
        sigmas = get_sigmas_karras(n, 0.1, 20.0, append_zero=False).double()
        sigmas[0], sigmas[-1] = 20.0, 0.1
        errors.append(float((SAMPLERS[name](model, x, sigmas, disable=True) - exact).abs().max()))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(0.8 * 2 ** order < r < 1.25 * 2 ** order for r in ratios), (errors, ratios)


def test_dpmpp_2m_is_exact_to_second_order():
    model = Gaussian(0.7)
    x = torch.tensor([[1.3]], dtype=torch.float64)
    sigmas = get_sigmas_karras(64, 0.1, 20.0, append_zero=False).double()
    sigmas[0], sigmas[-1] = 20.0, 0.1
    out = SAMPLERS["dpmpp_2m"](model, x, sigmas, disable=True)
    assert float((out - model.exact(x, 20.0, 0.1)).abs()) < 1e-4


class Recorder(torch.nn.Module):
    """Records every (x, sigma) a sampler hands the model; exposes the wrapped model's round_sigma."""

    def __init__(self, den):
        super().__init__()
        self.den, self.calls = den, []
        if hasattr(den, "round_sigma"):
            self.round_sigma = den.round_sigma

    def forward(self, x, sigma, **kw):
        self.calls.append((x.clone(), sigma.clone()))
        return self.den(x, sigma, **kw)


class Ones:
    def __call__(self, sigma, sigma_next):
        return torch.ones(2, 3, 8, 8)


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2"])
def test_paper_mode_builds_x_hat_from_rounded_sigma_hat(name, sd_alphas_cumprod):
    paper = Recorder(DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="paper"))
    ingress = Recorder(DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="ingress"))
    x = start(paper.den)
    sigmas = schedule(paper.den, 6)
    for rec in (paper, ingress):
        SAMPLERS[name](rec, x, sigmas, disable=True, s_churn=1.0, noise_sampler=Ones())
    grid = set(paper.den.sigmas.tolist())
    assert all(set(s.tolist()) <= grid for _, s in paper.calls), "paper mode handed an off-grid sigma"
    # First call: x_hat = x + noise * sqrt(sigma_hat^2 - sigma^2), sigma and sigma_hat both rounded.
    sigma0 = paper.den.quantize_sigma(sigmas[0])
    sigma_hat = paper.den.quantize_sigma(sigma0 * (1 + 1.0 / 6))
    x_hat, seen = paper.calls[0]
    assert torch.equal(seen, sigma_hat.expand(2))
    torch.testing.assert_close(x_hat, x + (sigma_hat ** 2 - sigma0 ** 2).sqrt())
    # Ingress only rounds the network's timestep: its x_hat uses the continuous sigma_hat.
    x_hat_ingress, seen_ingress = ingress.calls[0]
    cont_hat = sigmas[0] * (1 + 1.0 / 6)
    torch.testing.assert_close(seen_ingress, cont_hat.expand(2))
    torch.testing.assert_close(x_hat_ingress, x + (cont_hat ** 2 - sigmas[0] ** 2).sqrt())
    assert not torch.allclose(x_hat, x_hat_ingress)


def test_trailing_zero_never_rounded(sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="paper")
    sigmas = schedule(den, 5)
    assert float(round_sigmas(den, sigmas)[-1]) == 0.0
    finals = []
    out = SAMPLERS["euler"](den, start(den), sigmas, disable=True,
                            callback=lambda info: finals.append(info["denoised"]))
    # An Euler step into sigma = 0 lands exactly on the last denoised estimate.
    torch.testing.assert_close(out, finals[-1])


def test_ingress_equals_paper_exactly_on_a_grid_schedule(sd_alphas_cumprod):
    ing = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="ingress")
    pap = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="paper")
    off = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="off")
    x = start(ing)
    on_grid = discretize_sigmas(schedule(ing, 7), ing.sigmas)
    for name in ("euler", "heun", "dpmpp_2m"):
        assert torch.equal(SAMPLERS[name](ing, x, on_grid, disable=True),
                           SAMPLERS[name](pap, x, on_grid, disable=True))
    # Off the grid the three modes differ: paper moves the whole step, ingress only the timestep.
    s = schedule(ing, 7)
    outs = [SAMPLERS["heun"](m, x, s, disable=True) for m in (off, ing, pap)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_wrapper_time_maps(sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    t = torch.tensor([0.0, 10.5, 500.25, 999.0])
    torch.testing.assert_close(den.sigma_to_t(den.t_to_sigma(t)), t, rtol=1e-4, atol=1e-3)
    assert torch.equal(den.sigma_to_t(den.sigmas[[3, 400]], mode="ingress"), torch.tensor([3.0, 400.0]))
    base = BaseModelWrapper(lambda x, s: x)
    s = torch.tensor([1.5])
    assert base.sigma_to_t(s) is s and base.round_sigma(s) is s and base.t_to_sigma(s) is s


@pytest.mark.parametrize("mode", [True, False, 1, "round"])
def test_sigma_to_t_refuses_anything_but_a_mode(mode, sd_alphas_cumprod):
    """k-diffusion's quantize=True would silently give a fractional timestep here: a mode string is required."""
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    with pytest.raises(ValueError, match="mode must be one of off, ingress, paper"):
        den.sigma_to_t(den.sigmas[[3]], mode=mode)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_is_bit_identical(name, sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="paper")
    runs = []
    for _ in range(2):
        x = start(den, seed=42)
        ns = BrownianNoiseSampler(x, [42, 43], 21.0)
        kw = {} if name in ("dpmpp_2m",) else {"noise_sampler": ns}
        if name in ("euler", "heun", "dpm_2"):
            kw["s_churn"] = 2.0
        runs.append(SAMPLERS[name](den, x, schedule(den, 6), disable=True, **kw))
    assert torch.equal(runs[0], runs[1])


def test_noise_sampler_depends_on_interval_not_history():
    x = torch.zeros(2, 3, 4, 4)
    fresh = BrownianNoiseSampler(x, [7, 8], 15.0)
    used = BrownianNoiseSampler(x, [7, 8], 15.0)
    for a, b in [(14.0, 9.0), (3.0, 1.0), (0.5, 0.1)]:
        used(torch.tensor(a), torch.tensor(b))
    s, s_next = torch.tensor([2.0, 2.0]), torch.tensor([1.5, 1.5])
    assert torch.equal(fresh(s, s_next), used(s, s_next))
    draw = fresh(s, s_next)
    assert not torch.equal(draw[0], draw[1]), "each seed has its own path"
    # Increments over adjacent intervals add up like a Brownian motion's.
    w = lambda a, b: fresh(torch.tensor(a), torch.tensor(b)) * math.sqrt(abs(b - a))  # noqa: E731
    torch.testing.assert_close(w(3.0, 2.0) + w(2.0, 1.0), w(3.0, 1.0), rtol=1e-4, atol=1e-5)


def test_noise_sampler_is_standard_normal():
    x = torch.zeros(1, 64, 64, 4)
    draws = torch.cat([BrownianNoiseSampler(x, s, 15.0)(torch.tensor(5.0), torch.tensor(4.2)).flatten()
                       for s in range(4)])
    assert abs(float(draws.mean())) < 0.03 and abs(float(draws.std()) - 1) < 0.03


def test_stochastic_samplers_demand_explicit_noise(sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    for name, kw in [("euler_ancestral", {}), ("dpmpp_2m_sde", {}), ("heun", {"s_churn": 1.0})]:
        with pytest.raises(ValueError, match="noise_sampler"):
            SAMPLERS[name](den, start(den), schedule(den, 4), disable=True, **kw)


@pytest.mark.parametrize("sigmas, message", [
    (torch.tensor([5.0]), "at least one step"),
    (torch.tensor([5.0, 6.0, 0.0]), "strictly descending"),
    (torch.tensor([5.0, 0.0, 1.0, 0.0]), "0, except a final 0"),
    (torch.tensor([5.0, float("nan"), 0.0]), "finite"),
    (torch.tensor([float("inf"), 1.0, 0.0]), "finite"),
    ([5.0, 1.0], "torch tensor"),
])
def test_bad_sigmas(sigmas, message, sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    with pytest.raises(ValueError, match=message):
        SAMPLERS["euler"](den, start(den), sigmas, disable=True)


def test_bad_wrapper_arguments(sd_alphas_cumprod):
    with pytest.raises(ValueError, match="quantize must be one of"):
        DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="round")
    for bad in (torch.tensor([0.9, 1.0]), torch.tensor([0.9, 0.0]), torch.tensor([0.9, float("nan")])):
        with pytest.raises(ValueError, match="alphas_cumprod"):
            DiscreteEpsDenoiser(toy_eps, bad)


def test_noise_sampler_batch_equals_each_item_alone():
    """Every item descends its own tree in one tensor pass; the draw does not depend on the batch."""
    x = torch.zeros(3, 2, 4, 4)
    s, s_next = torch.tensor([5.0, 3.0, 0.7]), torch.tensor([4.0, 2.9, 0.1])
    together = BrownianNoiseSampler(x, [1, 2, 3], 15.0)(s, s_next)
    for i, seed in enumerate([1, 2, 3]):
        alone = BrownianNoiseSampler(x[i:i + 1], seed, 15.0)(s[i:i + 1], s_next[i:i + 1])
        assert torch.equal(together[i:i + 1], alone)


def test_counter_hash_is_splitmix64():
    from sampler_lib.noise import _mix, mix
    values = [0, 1, 7, 2 ** 40 + 3, 2 ** 62 + 12345, 2 ** 63 - 1]
    got = mix(torch.tensor(values)[:, None], torch.tensor([0, 1, 2, 3, 10 ** 6])[None])
    assert got.tolist() == [[_mix(a, b) for b in (0, 1, 2, 3, 10 ** 6)] for a in values]


@pytest.mark.parametrize("name", ["lms", "dpmpp_3m_sde", "dpmpp_2s_ancestral", "dpm_2_ancestral", "dpmpp_sde"])
def test_multistep_and_ancestral_samplers_survive_repeated_rounded_sigmas(name, sd_alphas_cumprod):
    """Paper mode rounds a dense schedule onto 1000 training sigmas, so neighbours can coincide: a zero-length step
    changes nothing, interpolation skips a repeated point, and the result stays finite."""
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="paper")
    sigmas = get_sigmas_karras(300, float(den.sigma_min), float(den.sigma_max))
    rounded = round_sigmas(den, sigmas)
    assert bool((rounded[1:] == rounded[:-1]).any())  # the case under test really happens
    x = start(den)
    out = SAMPLERS[name](den, x, sigmas, disable=True, noise_sampler=BrownianNoiseSampler(x, [1, 2], 20.0))
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("steps", [5, 20])
def test_ddim_matches_diffusers_ddim_scheduler(steps, sd_alphas_cumprod):
    """sampler_lib's ddim on diffusers DDIMScheduler's own timesteps (leading spacing, steps_offset 1, final alpha
    = alphas_cumprod[0]) gives its trajectory's end, once x_t = x / sqrt(1 + sigma^2) (Song et al.'s scaling)."""
    from diffusers import DDIMScheduler
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    sched.set_timesteps(steps)
    x_t = initial_noise((3, 8, 8), 4)[None]
    theirs = x_t.clone()
    for t in sched.timesteps:
        theirs = sched.step(toy_eps(theirs, t.expand(1)), t, theirs).prev_sample
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    sigma_of = lambda a: ((1 - a) / a) ** 0.5  # noqa: E731
    sigmas = torch.stack([sigma_of(sd_alphas_cumprod[int(t)]) for t in sched.timesteps]
                         + [sigma_of(sd_alphas_cumprod[0])])
    ours = SAMPLERS["ddim"](den, x_t * (1 + sigmas[0] ** 2) ** 0.5, sigmas, disable=True)
    torch.testing.assert_close(ours / (1 + sigmas[-1] ** 2) ** 0.5, theirs, rtol=1e-4, atol=1e-4)


class _DeviceReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ops that make the host wait for the device on a GPU: reading a value (.item(), bool(), float(),
    .tolist()) or a data-dependent shape (nonzero)."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.READS
        return func(*args, **(kwargs or {}))


def _device_reads(name, quantize, steps, alphas_cumprod, monkeypatch):
    from comparisons.core.config import CHURN
    den = DiscreteEpsDenoiser(toy_eps, alphas_cumprod, quantize=quantize)
    sigmas = schedule(den, steps)
    x = start(den)
    kwargs = {"noise_sampler": BrownianNoiseSampler(x, [1, 2], 2 * float(den.sigma_max))}
    if name in CHURN:
        kwargs["s_churn"] = 4.0 * steps  # churn on every step, so its noise and rounding run in the loop
    # .tolist() reads the device without dispatching on a CPU tensor: counted by hand.
    counted, tolist = _DeviceReads(), torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: (setattr(counted, "count", counted.count + 1), tolist(t))[1])
    with counted:
        out = SAMPLERS[name](den, x, sigmas, disable=True, **kwargs)
    assert torch.isfinite(out).all()
    return counted.count


# dpm_adaptive decides each step from the error it measured: it reads the device by design (its step count does
# not follow the schedule's either).
@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"dpm_adaptive"}))
@pytest.mark.parametrize("quantize", ["paper", ("paper", "ingress")])
def test_no_step_waits_on_the_device(name, quantize, sd_alphas_cumprod, monkeypatch):
    """Every schedule-only decision (churn, ancestral splits, which items take which stage, the wrapper's mode)
    is read once before the loop, and the noise sampler is keyed on host copies: the device reads of a run do
    not grow with its steps, so a GPU queues step after step (and CUDA graphs can capture one)."""
    few = _device_reads(name, quantize, 4, sd_alphas_cumprod, monkeypatch)
    many = _device_reads(name, quantize, 12, sd_alphas_cumprod, monkeypatch)
    assert many == few, f"{name}: {few} device reads at 4 steps, {many} at 12"


def test_noise_sampler_never_reads_its_device_given_host_sigmas():
    """On the meta device any read of a value raises: given host sigmas (what the samplers pass), the noise
    sampler computes on its device without reading it back; the range check runs on the host values."""
    x = torch.zeros(2, 3, 4, 4, device="meta")
    noise = BrownianNoiseSampler(x, [1, 2], 10.0)
    out = noise(torch.tensor([5.0, 4.0]), torch.tensor([2.5, 0.0]))
    assert out.device.type == "meta" and out.shape == x.shape
    with pytest.raises(ValueError, match=r"outside \[0, 10.0\]; build the noise sampler with a larger sigma_max"):
        noise(torch.tensor([12.0, 4.0]), torch.tensor([2.5, 0.0]))
    with pytest.raises(ValueError, match="outside"):
        noise(torch.tensor([float("nan"), 4.0]), torch.tensor([2.5, 0.0]))
