"""The one registry (sampler_lib/registry.py): what every registered sampler declares is what it does (network calls
counted on a toy denoiser, noise drawn, options in its signature), and the menus, the config's option sets and the
study's call counts derive from it."""
import inspect

import pytest
import torch

import sampler_lib
from comparisons.core import config, grid
from comparisons.errors import ConfigError
from sampler_lib import GROUPS, REGISTRY, EpsSampling, get_sigmas_karras, network_calls, scaled_linear_alphas_cumprod
from sampler_lib.registry import alias, sampler

NAMES = list(REGISTRY)  # every sampler registered when sampler_lib is imported, including ones added later
CONTRACT = {"model", "x", "sigmas", "extra_args", "callback", "disable", "noise_sampler"}


class CountingDenoiser:
    """The Gaussian's ideal denoiser D = x / (1 + sigma^2), counting network calls; `denoised_and_uncond` is one
    call giving the unconditional prediction too (what a CFG++ sampler asks of the guidance hook)."""

    # An eps model's sampling: samplers that read the model's training sigmas (sa_solver's noise window) get SD's.
    model_sampling = EpsSampling(scaled_linear_alphas_cumprod())

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, **_):
        self.calls += 1
        return x / (1 + sigma.reshape(-1, *[1] * (x.ndim - 1)) ** 2)

    def denoised_and_uncond(self, x, sigma, **kwargs):
        denoised = self(x, sigma, **kwargs)
        return denoised, 0.9 * denoised


class CountingNoise:
    def __init__(self, x):
        self.calls, self.x = 0, x

    def __call__(self, sigma, sigma_next):
        self.calls += 1
        return torch.randn(self.x.shape, generator=torch.Generator().manual_seed(self.calls))


def schedule(steps, final_zero):
    """`steps` intervals of a Karras schedule on SD's range, ending in 0 or at its smallest sigma (config.schedule)."""
    sigmas = get_sigmas_karras(steps if final_zero else steps + 1, 0.0292, 14.6)
    return sigmas if final_zero else sigmas[:-1]


def run(name, steps, final_zero):
    model = CountingDenoiser()
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 14.6
    noise = CountingNoise(x)
    out = REGISTRY[name].fn(model, x, schedule(steps, final_zero), disable=True, noise_sampler=noise)
    assert torch.isfinite(out).all()
    return model.calls, noise.calls


@pytest.mark.parametrize("name", NAMES)
def test_declared_network_calls_are_the_counted_ones(name):
    if REGISTRY[name].calls_per_step is None:  # picks its own steps: nothing to declare
        assert network_calls(name, 7) is None
        return
    for steps in (1, 2, 3, 7):
        for final_zero in (True, False):
            calls, _ = run(name, steps, final_zero)
            assert network_calls(name, steps, final_zero) == calls, (steps, final_zero)


@pytest.mark.parametrize("name", NAMES)
def test_samplers_that_add_noise_draw_it_and_the_others_do_not(name):
    _, drawn = run(name, 3, final_zero=False)  # no step into 0, where an ancestral step adds none
    assert (drawn > 0) == REGISTRY[name].adds_noise


@pytest.mark.parametrize("name", NAMES)
def test_a_spec_is_well_formed(name):
    spec = REGISTRY[name]
    assert spec.name == name and spec.group in GROUPS and spec.note.strip()
    params = inspect.signature(spec.fn).parameters
    assert set(spec.options) == set(params) - CONTRACT, "options are the keywords beyond the contract"
    assert CONTRACT <= set(params), "every sampler takes the whole contract"
    assert spec.flow in ("denoised", "rf") or (spec.flow.startswith("refused: ") and len(spec.flow) > 10)
    assert spec.calls_per_step is None or spec.calls_per_step >= 1
    if spec.alias_of is not None:
        target = REGISTRY[spec.alias_of]
        assert target.alias_of is None and target.fn is spec.fn and target.group == spec.group


def test_menu_order_is_groups_then_declaration():
    groups = [REGISTRY[n].group for n in NAMES]
    assert groups == sorted(groups, key=GROUPS.index)
    assert list(sampler_lib.SAMPLERS) == NAMES and all(sampler_lib.SAMPLERS[n] is REGISTRY[n].fn for n in NAMES)
    # The menus as they were before the registry: samplers added since may sit between, not reorder them.
    before = ["euler", "ddim", "heun", "dpm_2", "heunpp2", "dpmpp_2m", "lms", "ipndm", "ipndm_v", "deis",
              "res_multistep", "uni_pc", "uni_pc_bh2", "dpm_fast", "dpm_adaptive", "euler_ancestral", "dpm_2_ancestral",
              "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm"]
    assert [n for n in NAMES if n in before] == before
    # A variant (a *_gpu alias, a *_cfg_pp sibling) sits in its target's block: everything from the target to it
    # extends the target's name.
    for name in NAMES:
        target = REGISTRY[name].alias_of or next((t for t in NAMES if name.startswith(t + "_")), None)
        if target is not None and REGISTRY[target].group == REGISTRY[name].group:
            block = NAMES[NAMES.index(target) + 1:NAMES.index(name) + 1]
            assert block and all(n.startswith(target + "_") for n in block), (name, block)


def test_config_sets_derive_from_the_registry():
    assert config.SAMPLER_NOTES == {n: REGISTRY[n].note for n in NAMES}
    assert [n for names in config.SAMPLER_GROUPS.values() for n in names] == NAMES
    assert set(config.CHURN) >= {"euler", "heun", "dpm_2", "heunpp2"}
    assert {"euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "dpmpp_3m_sde"} <= set(config.STOCHASTIC)
    assert {"ddpm", "lcm"} <= set(config.NOISE_ONLY)
    assert not set(config.STOCHASTIC) & set(config.NOISE_ONLY)
    for name in NAMES:
        cfg = config.SamplerConfig(sampler=name)
        kwargs = cfg.sampler_kwargs()
        inspect.signature(REGISTRY[name].fn).bind(None, None, None, **kwargs)  # it takes every one
        assert set(kwargs) == set(REGISTRY[name].options) & set(config.SAMPLER_OPTIONS)
    assert config.SamplerConfig(sampler="heun", s_churn=1.0).sampler_kwargs() == {
        "s_churn": 1.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
    assert config.SamplerConfig(sampler="euler_ancestral", eta=0.5).sampler_kwargs() == {"eta": 0.5, "s_noise": 1.0}
    assert config.SamplerConfig(sampler="dpmpp_2m").sampler_kwargs() == {}


def test_the_sampler_question_pays_euler_the_declared_calls():
    spec = grid.StudySpec(name="s", model="m", questions=(grid.Question("sampler", (), ()),),
                          samplers=("heun", "heunpp2"), steps=(4,), prompts=("p",), seeds=(0,))
    arms = {c.sampler: (c.a, c.b) for c in spec.cells()}
    assert (arms["heun"][1].sampler, arms["heun"][1].steps) == ("euler", 8)  # as before the registry
    assert (arms["heunpp2"][1].sampler, arms["heunpp2"][1].steps) == ("euler", 12)  # three calls a step
    assert grid.SECOND_ORDER["heunpp2"] == 3 and "euler" not in grid.SECOND_ORDER
    for one in ("euler", "dpm_adaptive"):
        with pytest.raises(ConfigError, match=f"{one} (makes one network call a step|picks its own steps)"):
            grid.StudySpec(name="s", model="m", questions=(grid.Question("sampler", (), ()),), samplers=(one,),
                           steps=(4,), prompts=("p",), seeds=(0,)).cells()


def test_registering_refuses_duplicates_unknown_groups_and_dangling_aliases():
    before = dict(REGISTRY)
    with pytest.raises(ValueError, match="registered twice"):
        sampler("euler", group="single-step", note="again", calls_per_step=1)(lambda: None)
    with pytest.raises(ValueError, match="group"):
        sampler("not_a_sampler", group="two-step", note="n", calls_per_step=1)(lambda: None)
    with pytest.raises(ValueError, match="flow"):
        sampler("not_a_sampler", group="multistep", note="n", calls_per_step=1, flow="eps")(lambda: None)
    with pytest.raises(ValueError, match="no sampler"):
        alias("not_a_sampler_gpu", "not_a_sampler", "n")
    assert REGISTRY == before
