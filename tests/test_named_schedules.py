"""sampler_lib.SCHEDULES: every named schedule on Stable Diffusion's 1000 training sigmas, checked against its
reference — diffusers 0.42's EulerDiscreteScheduler and k-diffusion 0.1.1 where installed (run side by side), else
the values ComfyUI's comfy/samplers.py formula gives, written down below with the function they come from."""
import math

import numpy as np
import pytest
import torch

from sampler_lib import SCHEDULES, discretize_sigmas, scaled_linear_alphas_cumprod
from sampler_lib.named_schedules import AYS, ON_TRAINING_SIGMAS
from tests.conftest import load_kdiffusion

ALPHAS = scaled_linear_alphas_cumprod()
SIGMAS = ((1 - ALPHAS) / ALPHAS) ** 0.5  # ascending: 0.0292 .. 14.6146
GRID = SIGMAS.double()


def close(ours, want, rtol=1e-5):
    torch.testing.assert_close(ours.double(), torch.as_tensor(want, dtype=torch.float64), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("n", [1, 4, 10, 25])
def test_every_schedule_gives_n_steps_descending_to_zero(name, n):
    try:
        s = SCHEDULES[name](n, SIGMAS)
    except ValueError as exc:
        assert name == "ddim_uniform" and "choose" in str(exc)  # refused, saying which step counts work
        return
    assert s.shape == (n + 1,) and s.dtype == torch.float32 and float(s[-1]) == 0.0
    assert bool(torch.isfinite(s).all()) and bool((s[1:] < s[:-1]).all())


def _diffusers(n, **options):
    from diffusers import EulerDiscreteScheduler
    sched = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **options)
    sched.set_timesteps(n)
    return sched.sigmas


@pytest.mark.parametrize("n", [4, 10, 25, 30])
def test_diffusers_spacings_and_karras_match_diffusers(n):
    close(SCHEDULES["diffusers_linspace"](n, SIGMAS), _diffusers(n, timestep_spacing="linspace"))
    close(SCHEDULES["diffusers_leading"](n, SIGMAS), _diffusers(n, timestep_spacing="leading", steps_offset=1))
    close(SCHEDULES["diffusers_trailing"](n, SIGMAS), _diffusers(n, timestep_spacing="trailing"))
    close(SCHEDULES["karras"](n, SIGMAS), _diffusers(n, use_karras_sigmas=True))
    close(SCHEDULES["exponential"](n, SIGMAS), _diffusers(n, use_exponential_sigmas=True), rtol=1e-4)


@pytest.mark.parametrize("n", [3, 10, 25])
def test_k_diffusion_formulas_match_k_diffusion(n):
    k, _ = load_kdiffusion()
    lo, hi = float(SIGMAS[0]), float(SIGMAS[-1])
    close(SCHEDULES["karras"](n, SIGMAS), k.get_sigmas_karras(n, lo, hi))
    close(SCHEDULES["exponential"](n, SIGMAS), k.get_sigmas_exponential(n, lo, hi))
    close(SCHEDULES["polyexponential"](n, SIGMAS, rho=2.0), k.get_sigmas_polyexponential(n, lo, hi, rho=2.0))
    # k-diffusion's vp runs in the default dtype, where exp(x) - 1 loses ~2e-4 relative near the bottom: run it in
    # float64 to compare the formula, not float32's rounding.
    torch.set_default_dtype(torch.float64)
    try:
        want = k.get_sigmas_vp(n)
    finally:
        torch.set_default_dtype(torch.float32)
    close(SCHEDULES["vp"](n, SIGMAS), want)


def test_comfyui_schedules_at_ten_steps():
    # comfy/samplers.py simple_scheduler: sigmas[-(1 + int(x * 1000 / 10))] for x < 10, then 0.
    close(SCHEDULES["simple"](10, SIGMAS), list(GRID[[999 - 100 * x for x in range(10)]]) + [0])
    # ddim_scheduler: sigmas[1], [101], ..., [901] (stride 1000 // 10), reversed, then 0.
    close(SCHEDULES["ddim_uniform"](10, SIGMAS), list(GRID[[901 - 100 * x for x in range(10)]]) + [0])
    # normal_scheduler: timesteps linspace(999, 0, 10) = 999, 888, ..., 0 (whole numbers: no interpolation).
    close(SCHEDULES["normal"](10, SIGMAS), list(GRID[[999 - 111 * x for x in range(10)]]) + [0])
    # normal_scheduler(sgm=True): linspace(999, 0, 11)[:-1] = 999, 899.1, ...; log sigma interpolated.
    t = np.linspace(999, 0, 11)[:-1]
    want = [math.exp((1 - (x % 1)) * math.log(GRID[int(x)]) + (x % 1) * math.log(GRID[math.ceil(x)])) for x in t]
    close(SCHEDULES["sgm_uniform"](10, SIGMAS), want + [0])
    # beta_scheduler(alpha=0.6, beta=0.6): numpy.rint(scipy.stats.beta.ppf(1 - i/10, 0.6, 0.6) * 999) =
    close(SCHEDULES["beta"](10, SIGMAS), list(GRID[[999, 959, 876, 765, 637, 500, 362, 234, 123, 40]]) + [0])
    # kl_optimal_scheduler: tan(w atan(sigma_min) + (1 - w) atan(sigma_max)), w = i / 9.
    lo, hi = float(GRID[0]), float(GRID[-1])
    close(SCHEDULES["kl_optimal"](10, SIGMAS),
          [math.tan(i / 9 * math.atan(lo) + (1 - i / 9) * math.atan(hi)) for i in range(10)] + [0])
    # linear_quadratic_schedule at 4 steps (threshold 0.025, 2 linear steps): 1 - [0, 0.0125, 0.025, 0.275, 1],
    # times sigma_max (worked by hand from the formula: quadratic 0.2375 i^2 - 0.9375 i + 0.95 for i = 2, 3).
    close(SCHEDULES["linear_quadratic"](4, SIGMAS), [hi * (1 - v) for v in (0, 0.0125, 0.025, 0.275, 1)])


# Stable Video Diffusion's model sampling in ComfyUI (ModelSamplingContinuousEDM, sigma 0.002..700): 1000 sigmas
# evenly spaced in log sigma.
SVD_GRID = torch.linspace(math.log(0.002), math.log(700.0), 1000, dtype=torch.float64).exp()
AYS_GRIDS = {"SD1": SIGMAS, "SDXL": SIGMAS, "SVD": SVD_GRID}


def test_align_your_steps_tables_are_comfyuis_to_the_digit():
    """comfy_extras/nodes_align_your_steps.py NOISE_LEVELS, written down: SD1, SDXL and SVD."""
    assert AYS == {
        "SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
                0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
        "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
                 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
        "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]}
    from comparisons.core.config import AYS_MODELS
    assert AYS_MODELS == tuple(AYS)


@pytest.mark.parametrize("model_type", sorted(AYS))
@pytest.mark.parametrize("n", [10, 1, 4, 20, 32])
def test_align_your_steps_tables_and_log_linear_interpolation(model_type, n):
    table = AYS[model_type]
    # ComfyUI's AlignYourStepsScheduler (denoise 1): the table when steps + 1 == 11, else loglinear_interp(table,
    # steps + 1) = exp(numpy.interp of log levels, lowest first, over an even grid), reversed; the last set to 0.
    if n + 1 == len(table):
        want = table[:]
    else:
        xs, ys = np.linspace(0, 1, len(table)), np.log(table[::-1])
        want = list(np.exp(np.interp(np.linspace(0, 1, n + 1), xs, ys))[::-1])
    want[-1] = 0
    ours = SCHEDULES["align_your_steps"](n, AYS_GRIDS[model_type], model_type=model_type)
    torch.testing.assert_close(ours, torch.FloatTensor(want), rtol=1e-6, atol=0)


def test_align_your_steps_refuses_a_table_for_other_sigmas_naming_the_one_that_fits():
    with pytest.raises(ValueError, match="its SVD table is for Stable Video Diffusion's EDM training sigmas "
                                         "0.002..700; this model's are 0.02917..14.61: use ays_model SD1 or SDXL"):
        SCHEDULES["align_your_steps"](10, SIGMAS, model_type="SVD")
    with pytest.raises(ValueError, match="its SDXL table .*: use ays_model SVD$"):
        SCHEDULES["align_your_steps"](10, SVD_GRID, model_type="SDXL")


# ComfyUI's comfy/k_diffusion/sampling.py get_sigmas_laplace, written down (float32, as ComfyUI runs it): n sigmas
# from sigma_max to sigma_min, no final 0.
def comfy_laplace(n, sigma_min, sigma_max, mu=0., beta=0.5):
    epsilon = 1e-5  # avoid log(0)
    x = torch.linspace(0, 1, n)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + epsilon)
    return torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max)


@pytest.mark.parametrize("lo, hi", [(None, None), (0.1, 10.0), (0.002, 80.0), (0.5, 1000.0)])
def test_laplace_equals_comfyuis_formula(lo, hi):
    """laplace(n) = ComfyUI's get_sigmas_laplace(n) then 0, for every n it makes distinct (n = 1..150)."""
    lo_, hi_ = float(SIGMAS[0]) if lo is None else lo, float(SIGMAS[-1]) if hi is None else hi
    made = 0
    for n in range(1, 151):
        want = torch.cat([comfy_laplace(n, lo_, hi_), torch.zeros(1)])
        if bool((want[1:-1] >= want[:-2]).any()):  # ComfyUI repeats a sigma at an end: refused here
            with pytest.raises(ValueError, match=f"laplace schedule at {n} steps clamps two points to one end"):
                SCHEDULES["laplace"](n, SIGMAS, sigma_min=lo, sigma_max=hi)
            continue
        made += 1
        # ComfyUI's float32 log(1 - 2|0.5 - x| + 1e-5) cancels near the ends (a few 1e-6 relative): ours runs in
        # float64.
        torch.testing.assert_close(SCHEDULES["laplace"](n, SIGMAS, sigma_min=lo, sigma_max=hi), want, rtol=1e-5,
                                   atol=0)
    assert made >= 8
    assert made == 150 or lo == 0.5  # a sigma_min above e^mu = 1's neighbours clamps early: (0.5, 1000) at 9 steps


def test_laplace_through_a_config_and_comfyuis_node():
    """Its sigma range is the config's (the sigma_min rules apply); final_zero off at N steps is what ComfyUI's
    LaplaceScheduler node gives at N + 1 steps (N + 1 sigmas ending at sigma_min, no 0)."""
    from comparisons.core.config import RANGED_SCHEDULES, SCHEDULE_GROUPS, SamplerConfig, schedule
    assert "laplace" in RANGED_SCHEDULES and "laplace" in SCHEDULE_GROUPS["sigma_min..sigma_max"]
    lo, hi = float(SIGMAS[0]), float(SIGMAS[-1])
    for steps in (1, 4, 10, 25):
        cut = schedule(SamplerConfig(schedule="laplace", steps=steps, final_zero=False), SIGMAS)
        torch.testing.assert_close(cut, comfy_laplace(steps + 1, lo, hi), rtol=1e-5, atol=0)
    s = schedule(SamplerConfig(schedule="laplace", steps=10, sigma_min=0.1, sigma_max=10.0), SIGMAS)
    torch.testing.assert_close(s, torch.cat([comfy_laplace(10, 0.1, 10.0), torch.zeros(1)]), rtol=1e-5, atol=0)
    raised = schedule(SamplerConfig(schedule="laplace", steps=10, sigma_min_rule="penultimate_steps_plus_1"),
                      SIGMAS)
    assert float(raised[-2]) > lo and raised[-1] == 0


def test_laplace_on_a_flow_model_is_refused_saying_why():
    from sampler_lib import FlowSampling
    with pytest.raises(ValueError, match="laplace schedule cannot be built on a flow model's sigmas.*centred on "
                                         "sigma e\\^mu = 1"):
        SCHEDULES["laplace"](10, FlowSampling(shift=3.0))


def test_paper_rounding_leaves_schedules_on_training_sigmas_unchanged():
    """For schedules made of training sigmas, the paper's discretization (App. C.3.4) is the identity."""
    for name in ON_TRAINING_SIGMAS + ("normal",):
        s = SCHEDULES[name](10, SIGMAS)
        assert torch.equal(discretize_sigmas(s, SIGMAS), s), name
    moved = SCHEDULES["karras"](10, SIGMAS)
    assert not torch.equal(discretize_sigmas(moved, SIGMAS), moved)  # ... and not for karras


@pytest.mark.parametrize("call, message", [
    (lambda: SCHEDULES["beta"](10, SIGMAS, alpha=0), "alpha must be a number above 0"),
    (lambda: SCHEDULES["beta"](10, SIGMAS, beta=-1.0), "beta must be a number above 0"),
    (lambda: SCHEDULES["beta"](400, SIGMAS), "beta at 400 steps: ComfyUI runs 387 steps here"),
    (lambda: SCHEDULES["ddim_uniform"](7, SIGMAS), "ddim_uniform at 7 steps: ComfyUI runs 8 steps here .*; choose"),
    (lambda: SCHEDULES["align_your_steps"](10, SIGMAS * 3), "its SD1 table is for SD 1.x/2.x eps training sigmas"),
    (lambda: SCHEDULES["laplace"](430, SIGMAS), "laplace schedule at 430 steps .*use at most 429 steps"),
    (lambda: SCHEDULES["laplace"](10, SIGMAS, beta=0), "beta must be above 0"),
    (lambda: SCHEDULES["align_your_steps"](10, SIGMAS, model_type="SD3"), "model_type must be one of"),
    (lambda: SCHEDULES["karras"](0, SIGMAS), "steps must be a whole number >= 1"),
    (lambda: SCHEDULES["simple"](10, SIGMAS.flip(0)), "must be ascending"),
    (lambda: SCHEDULES["linear_quadratic"](10, SIGMAS, linear_steps=10), "linear_steps must be between 1 and 9"),
])
def test_schedules_refuse_what_they_cannot_make(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.fixture(scope="module")
def embedded():
    from sampler_lib.models import load_model
    return load_model("embedded", device="cpu")


EVERY_SAMPLER = sorted(__import__("sampler_lib").SAMPLERS)


@pytest.mark.parametrize("sampler", EVERY_SAMPLER)
def test_every_sampler_schedule_and_mode_gives_a_finite_image(embedded, sampler):
    """Through configs and the engine: each sampler on every named schedule (2 steps, every arm in one batch) gives
    a finite image; final_zero=False keeps `steps` intervals on every schedule. The discretization modes take turns
    along the schedules, starting one further on for each sampler: every sampler meets every mode, and across the
    samplers every schedule meets every mode, at a third of the arms of every schedule in every mode."""
    from comparisons.core.config import SCHEDULES as CONFIG_SCHEDULES
    from comparisons.core.config import SamplerConfig, schedule
    from comparisons.core.engine import Sample, sample_arms
    from sampler_lib import QUANTIZE_MODES, REGISTRY
    assert CONFIG_SCHEDULES == tuple(SCHEDULES)
    rho = {"polyexponential": 1.0}  # its degree (at most 2), not Karras' 7
    # A CFG++ sampler shares its sibling's schedule arithmetic; its modes, per item, are tests/test_cfg_pp.py's. Here
    # paper mode alone, the one that changes the sigmas (rounded, repeated), keeps its share of this test small.
    modes = ("paper",) if REGISTRY[sampler].cfg_pp else QUANTIZE_MODES
    turn = EVERY_SAMPLER.index(sampler)
    arms = [SamplerConfig(sampler=sampler, steps=2, schedule=name, quantize=modes[(turn + k) % len(modes)],
                          rho=rho.get(name, 7.0)) for k, name in enumerate(SCHEDULES)]
    assert len(SCHEDULES) >= len(modes) and {a.quantize for a in arms} == set(modes)
    out = sample_arms(embedded, arms, [Sample("a red circle", 0)])
    assert out.shape[:2] == (1, len(arms)) and bool(torch.isfinite(out).all())
    images = embedded.decode_float(out[0])
    assert bool(torch.isfinite(images).all())  # 2 steps are far from converged (Heun overshoots): finite is the bar
    grid = embedded.denoiser("off").sigmas
    for name in SCHEDULES:
        cut = schedule(SamplerConfig(sampler=sampler, steps=2, schedule=name, final_zero=False,
                                     rho=rho.get(name, 7.0)), grid)
        assert len(cut) == 3 and float(cut[-1]) > 0, name


def test_configs_stored_before_the_new_fields_keep_their_json():
    """beta_alpha, beta_beta and ays_model appear in a config's JSON only when set: every config stored before
    keeps its JSON, hence its reference key and its study's identity."""
    from comparisons.core.config import SamplerConfig
    assert SamplerConfig().to_json() == (
        '{"eta": 1.0, "final_zero": true, "guidance_scale": 3.0, "quantize": "off", "rho": 7.0, "s_churn": 0.0, '
        '"s_noise": 1.0, "s_tmax": null, "s_tmin": 0.0, "sampler": "heun", "schedule": "karras", "sigma_max": null, '
        '"sigma_min": null, "sigma_min_rule": "model", "steps": 25}')
    beta = SamplerConfig(schedule="beta", beta_alpha=0.5, ays_model="SDXL")
    assert '"beta_alpha": 0.5' in beta.to_json() and '"beta_beta"' not in beta.to_json()
    assert SamplerConfig.from_json(beta.to_json()) == beta


def test_studies_stored_before_keep_their_identity():
    """A spec without --schedules hashes as before the schedules (the value the pre-change code gave)."""
    from comparisons.core.grid import StudySpec
    from comparisons.specs import questions_from
    spec = StudySpec(name="x", model="embedded", questions=questions_from("final-zero,discretization"),
                     samplers=("heun",), steps=(4, 10), prompts=("a red circle",), seeds=(0, 1))
    assert spec.study_id == "fec7bec7b30c94f6"
    assert StudySpec.from_json(spec.to_json()) == spec


def test_study_over_schedules_with_the_schedule_and_sampler_questions(tmp_path):
    """`study --schedules karras,beta` asks every question under each schedule (cells question@schedule); the
    schedule question sets Karras against each other schedule; the sampler question sets Heun at N steps against
    Euler at 2N (equal network calls). End to end through the CLI on the embedded model."""
    import csv
    import json as jsonlib

    from comparisons.results.store import ResultsStore
    from tests.conftest import run_cli
    args = ["study", "--questions", "final-zero,schedule,sampler", "--schedules", "karras,beta", "--samplers",
            "heun", "--steps", "3", "--seeds", "0-1", "--results", str(tmp_path / "r.db"), "--out",
            str(tmp_path / "out"), "--reference", '{"steps": 8}', "--reference-check", "0"]
    code, printed, err = run_cli(args)
    assert code == 0, err
    with open(tmp_path / "out" / "summary.csv") as f:
        cells = {r["question"]: r for r in csv.DictReader(f)}
    assert set(cells) == {"final-zero@karras", "final-zero@beta", "schedule@beta", "sampler@karras", "sampler@beta"}
    assert all(int(r["n"]) == 2 for r in cells.values())
    store = ResultsStore(tmp_path / "r.db")
    rows = store.study_rows(store.study("out")["study_id"])
    arms = {r["question"]: (jsonlib.loads(r["config_a"]), jsonlib.loads(r["config_b"])) for r in rows}
    a, b = arms["schedule@beta"]
    assert (a["schedule"], b["schedule"]) == ("karras", "beta")
    a, b = arms["sampler@beta"]
    assert (a["sampler"], a["steps"], b["sampler"], b["steps"], b["schedule"]) == ("heun", 3, "euler", 6, "beta")
    a, b = arms["final-zero@beta"]
    assert (a["schedule"], b["schedule"], a["final_zero"], b["final_zero"]) == ("beta", "beta", True, False)


@pytest.mark.parametrize("change, message", [
    (["--questions", "schedule"], "question schedule sets Karras against each schedule of --schedules"),
    (["--schedules", "karras,nope"], "unknown schedule 'nope'; choose from karras"),
    (["--questions", "sampler", "--samplers", "euler"], "euler makes one network call a step"),
    (["--questions", "sigma-min", "--schedules", "simple"], "sigma_min_rule applies to the schedules"),
    (["--schedules", "ddim_uniform", "--steps", "7"], "ddim_uniform at 7 steps"),
])
def test_study_refuses_schedules_it_cannot_run(tmp_path, change, message):
    from tests.conftest import run_cli
    args = ["study", "--questions", "final-zero", "--samplers", "heun", "--steps", "3", "--seeds", "0",
            "--results", str(tmp_path / "r.db"), "--out", str(tmp_path / "out"), "--reference", '{"steps": 8}',
            "--reference-check", "0"]
    for flag, value in zip(change[::2], change[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    code, _, err = run_cli(args)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "out").exists()


def test_every_sampler_and_schedule_has_its_menu_line():
    from comparisons.core.config import SAMPLER_GROUPS, SAMPLER_NOTES, SCHEDULE_NOTES
    from sampler_lib import SAMPLERS
    from ui.compare import SAMPLER_CHOICES
    assert set(SAMPLER_NOTES) == set(SAMPLERS) and set(SCHEDULE_NOTES) == set(SCHEDULES)
    grouped = [s for names in SAMPLER_GROUPS.values() for s in names]
    assert sorted(grouped) == sorted(SAMPLERS)  # each sampler in exactly one group
    assert [value for _, value in SAMPLER_CHOICES] == grouped
    assert SAMPLER_CHOICES[0][0].startswith("euler · single-step — ")
    from comparisons.core.config import SCHEDULE_GROUPS
    from ui.compare import SCHEDULE_CHOICES
    assert sorted(s for names in SCHEDULE_GROUPS.values() for s in names) == sorted(SCHEDULES)
    assert SCHEDULE_CHOICES[0] == ("karras · sigma_min..sigma_max — " + SCHEDULE_NOTES["karras"], "karras")


def test_the_app_study_form_takes_schedules_and_refuses_in_its_own_words(tmp_path, monkeypatch):
    """The Study tab's run form passes its schedules to the study; a refusal is one message in the app's words."""
    import dataclasses

    import app
    from comparisons.core.config import SamplerConfig
    from comparisons.workflows.lab import Lab
    from ui import study_tab
    # The form's spec with an 8-step reference and no paper-mode check: the app's default (200 Heun steps, checked)
    # is most of the cost and none of what this test asks.
    form_spec = study_tab.study_spec
    monkeypatch.setattr(study_tab, "study_spec", lambda *a, **k: dataclasses.replace(
        form_spec(*a, **k), reference=SamplerConfig(sampler="heun", steps=8), reference_check=0))
    settings = app.Settings(app.parse_args(["--results", str(tmp_path / "r.db")]))
    lab = Lab(tmp_path / "r.db")
    out = study_tab.start_study_ui(lab, settings, "s", ["schedule"], ["heun"], "3", "0", "a red circle", [],
                                   progress=lambda *a, **k: None)
    assert "question schedule sets Karras against each schedule of schedules" in out[0] and "--" not in out[0]
    out = study_tab.start_study_ui(lab, settings, "s", ["schedule"], ["heun"], "3", "0", "a red circle", ["beta"],
                                   progress=lambda *a, **k: None)
    assert out[0] == "" and "**s** · model" in out[2] and "1 of 1 rows" in out[2] and "schedule@beta" in out[3]
