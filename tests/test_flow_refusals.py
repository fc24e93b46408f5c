"""Bad input on a flow model (#34 item 7): what only an eps model can do (Karras churn, a sigma_max above 1, a schedule
that cannot be built on the flow grid) is one line, a ConfigError with its form field, before anything is sampled or
written: exit 2 from the CLI's sweep and study, nothing in the results file; the same configs still run on an eps model,
and the flow model still runs what it can."""
import json
import re

import pytest
import torch

from comparisons import cli
from comparisons.core.config import CHURN, SamplerConfig, check_for_model, schedule
from comparisons.core.engine import Sample, sample_arms
from comparisons.errors import ConfigError
from comparisons.specs import study_spec
from sampler_lib import EpsSampling, FlowSampling, scaled_linear_alphas_cumprod
from tests.fakes import FakeModel
from tests.test_model_sampling import FlowFake

FLOW = FlowSampling(shift=3.0)
EPS = EpsSampling(scaled_linear_alphas_cumprod())

# (config overrides, the field at fault, words the message says)
REFUSED = [
    ({"sampler": "euler", "s_churn": 1.0}, "s_churn", "churn has no rectified-flow formula"),
    ({"sampler": "heun", "s_churn": 0.5}, "s_churn", "set s_churn to 0"),
    ({"sampler": "dpm_2", "s_churn": 4.0}, "s_churn", "s_churn"),
    ({"sampler": "heunpp2", "s_churn": 2.0}, "s_churn", "s_churn"),
    ({"sigma_max": 14.6}, "sigma_max", "outside a flow model's sigmas (0, 1]"),
    ({"schedule": "align_your_steps"}, "schedule", "cannot be built on a flow model"),
    ({"schedule": "vp"}, "schedule", "cannot be built on a flow model"),
    ({"schedule": "diffusers_trailing"}, "schedule", "cannot be built on a flow model"),
]


def refusal(overrides, sampling=FLOW):
    cfg = SamplerConfig.from_dict(overrides)
    with pytest.raises(ConfigError) as err:
        schedule(cfg, sampling)
    return err.value


@pytest.mark.parametrize("overrides, field, words", REFUSED, ids=lambda v: str(v)[:40])
def test_flow_refusals_are_one_line_with_their_field(overrides, field, words):
    err = refusal(overrides)
    assert err.field == field and words in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("overrides", [r[0] for r in REFUSED if r[1] != "schedule"], ids=str)
def test_the_same_configs_run_on_an_eps_model(overrides):
    cfg = SamplerConfig.from_dict(overrides)
    check_for_model(cfg, EPS)
    assert float(schedule(cfg, EPS)[-1]) == 0.0


def test_what_flow_models_can_do_is_not_refused():
    """Every sampler without churn (the ancestral and SDE ones have flow formulas) but those declared refused on a flow
    (each refused in its own words), an explicit sigma_min in (0, 1], and s_churn on a sampler that takes none (it is
    ignored there) pass."""
    from sampler_lib import REGISTRY, SAMPLERS
    for name in SAMPLERS:
        refused = REGISTRY[name].flow.removeprefix("refused: ")
        if refused != REGISTRY[name].flow:
            with pytest.raises(ConfigError, match=f"^{name} on a flow model: {re.escape(refused)}$"):
                check_for_model(SamplerConfig(sampler=name), FLOW)
            continue
        check_for_model(SamplerConfig(sampler=name), FLOW)
    check_for_model(SamplerConfig(sampler="euler_ancestral", s_churn=3.0), FLOW)
    assert float(schedule(SamplerConfig(sigma_min=0.01), FLOW)[-2]) == pytest.approx(0.01)
    assert set(CHURN) == {"euler", "heun", "dpm_2", "heunpp2"}


def test_the_engine_refuses_before_sampling():
    model = FlowFake()
    calls = []
    denoiser = model.denoiser
    model.denoiser = lambda quantize="off": calls.append(quantize) or denoiser(quantize)
    with pytest.raises(ConfigError, match="s_churn"):
        sample_arms(model, [SamplerConfig(sampler="euler", steps=4, s_churn=1.0)], [Sample("a red circle", 1)])
    assert calls == []
    # the model is still usable, and the eps model still churns
    out = sample_arms(model, [SamplerConfig(sampler="euler_ancestral", steps=4, schedule="simple")],
                      [Sample("a red circle", 1)])
    assert torch.isfinite(out).all()
    out = sample_arms(FakeModel(), [SamplerConfig(sampler="euler", steps=4, s_churn=1.0)], [Sample("a red circle", 1)])
    assert torch.isfinite(out).all()


def test_a_study_spec_on_a_flow_model_refuses_its_question(tmp_path):
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"churn": [{"s_churn": 1.0}, {}]}))
    with pytest.raises(ConfigError, match="s_churn .*flow model") as err:
        study_spec(FlowFake(), name="s", model_name="fake-flow", questions_file=str(questions), samplers="euler",
                   steps="4", seeds="0-1")
    assert "\n" not in str(err.value) and "question 'churn' at euler, 4 steps" in str(err.value)
    spec = study_spec(FakeModel(), name="s", model_name="fake", questions_file=str(questions), samplers="euler",
                      steps="4", seeds="0-1")
    assert len(spec.cells()) == 1


@pytest.mark.parametrize("argv", [
    ["sweep", "--sampler", "euler", "--a", '{"s_churn": 1.0}', "--b", "{}"],
    ["sweep", "--a", '{"schedule": "vp"}', "--b", "{}"],
    ["sweep", "--a", '{"sigma_max": 14.6}', "--b", "{}"],
    ["study", "--questions", "discretization", "--samplers", "heun", "--steps", "4", "--seeds", "0-1",
     "--schedules", "align_your_steps"],
], ids=["churn", "schedule", "sigma_max", "study"])
def test_cli_exits_2_with_one_line_and_writes_nothing(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_model_or_fail", lambda name: FlowFake())
    results, out = tmp_path / "results.db", tmp_path / "out"
    extra = ["--model", "fake-flow", "--results", str(results)] + (["--out", str(out)] if argv[0] == "study" else [])
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not results.exists() and not out.exists()


# --- the shift question (#34 item 6): a config's shift on a flow model; None is the model's own -----------------------

def test_shift_is_a_later_field_old_configs_keep_their_json():
    old = SamplerConfig().to_json()
    assert "shift" not in old and SamplerConfig.from_json(old) == SamplerConfig()
    assert json.loads(SamplerConfig(shift=1.0).to_json())["shift"] == 1.0


def test_shift_spaces_the_schedule_on_the_shifted_grid():
    for name in ("simple", "normal", "beta", "karras"):
        cfg = SamplerConfig(schedule=name, steps=8)
        one = SamplerConfig.from_dict({"shift": 1.0}, cfg)
        assert torch.equal(schedule(one, FLOW), schedule(cfg, FlowSampling(shift=1.0))), name
        assert not torch.equal(schedule(one, FLOW), schedule(cfg, FLOW)), name
    # Flux's dynamic shift e^mu is SD3's constant one at s = e^mu: "fixed 3" on mu = ln 3 is the model's own
    flux = FlowSampling(mu=float(torch.tensor(3.0).log()))
    torch.testing.assert_close(schedule(SamplerConfig(schedule="simple", shift=3.0), flux),
                               schedule(SamplerConfig(schedule="simple"), flux))


@pytest.mark.parametrize("overrides, sampling, field, words", [
    ({"shift": 3.0}, EPS, "shift", "applies to flow models"),
    ({"shift": 3.0, "quantize": "paper"}, FLOW, "quantize", "use quantize off with a shift"),
    ({"shift": 3.0, "quantize": "ingress"}, FLOW, "quantize", "use quantize off with a shift"),
], ids=["eps", "paper", "ingress"])
def test_shift_refusals(overrides, sampling, field, words):
    err = refusal(overrides, sampling)
    assert err.field == field and words in str(err) and "\n" not in str(err)
    with pytest.raises(ConfigError, match="shift must be between") as bad:
        SamplerConfig(shift=0.0)
    assert bad.value.field == "shift"


def test_a_shift_study_question_runs_on_a_flow_model_only(tmp_path):
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"shift": [{"shift": 3.0}, {"shift": 1.0}], "shift-dynamic": [{}, {"shift": 3.0}]}))
    spec = study_spec(FlowFake(), name="s", model_name="fake-flow", questions_file=str(questions),
                      samplers="euler,dpmpp_2m_sde", steps="4", seeds="0-1")
    assert len(spec.cells()) == 4
    with pytest.raises(ConfigError, match="shift 3 applies to flow models"):
        study_spec(FakeModel(), name="s", model_name="fake", questions_file=str(questions), samplers="euler",
                   steps="4", seeds="0-1")
    # the two arms run in lockstep, each on its own grid's schedule; shift 3 vs 1 are different images
    model = FlowFake()
    cfgs = [SamplerConfig(sampler="euler", steps=5, schedule="simple", shift=s) for s in (3.0, 1.0, None)]
    out = sample_arms(model, cfgs, [Sample("a red circle", 2)])
    assert not torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 0], out[0, 2])  # FlowFake's own shift is 3


def test_the_shift_presets_run_by_name_on_a_flow_model_and_are_refused_on_eps():
    spec = study_spec(FlowFake(), name="s", model_name="fake-flow", questions="shift,shift-model-vs-fixed,final-zero",
                      samplers="euler", steps="4", seeds="0-1")
    assert {c.question for c in spec.cells()} == {"shift", "shift-model-vs-fixed", "final-zero"}
    with pytest.raises(ConfigError, match="shift 3 applies to flow models"):
        study_spec(FakeModel(), name="s", model_name="fake", questions="shift", samplers="euler", steps="4",
                   seeds="0-1")


def test_the_app_refuses_a_shift_on_an_eps_model_before_it_spends_a_visitors_budget():
    from types import SimpleNamespace

    import gradio as gr

    from ui.compare import serve_pair

    def admit(*_):
        raise AssertionError("a config the model cannot run reached the rate limits")

    settings = SimpleNamespace(models=["fake"], max_prompt=500, admit_generation=admit, hosted=None)
    lab = SimpleNamespace(model=lambda name: FakeModel())
    with pytest.raises(gr.Error) as refused:
        serve_pair(lab, settings, SimpleNamespace(session_hash="s"), "a red circle", "1", "fake", "custom",
                   SamplerConfig(shift=3.0), SamplerConfig())
    assert refused.value.field == "shift" and "flow models" in str(refused.value)


# --- a flow pipeline's scheduler config asking for what only eps / v models have (#34 item 7) -------------------------
# Tiny config folders, no weights: the loaders read scheduler/scheduler_config.json before any weights, so each case
# is refused in one line naming that file and the key to remove, the CLI exits 2 and writes nothing.

SD3_PARTS = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae", "scheduler")
FLUX_PARTS = SD3_PARTS  # Flux.1's tokenizer_2 / text_encoder_2 are its T5
PIPELINES = {"sd3": ("StableDiffusion3Pipeline", SD3_PARTS, {"shift": 3.0}),
             "flux": ("FluxPipeline", FLUX_PARTS, {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                                                   "max_shift": 1.15})}
BAD_SCHEDULERS = [
    ("sd3", {"prediction_type": "v_prediction"}, "remove prediction_type 'v_prediction'"),
    ("flux", {"prediction_type": "v_prediction"}, "remove prediction_type 'v_prediction'"),
    ("sd3", {"prediction_type": "epsilon"}, "remove prediction_type 'epsilon'"),
    ("flux", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
     "remove beta_schedule, beta_start, beta_end"),
    ("sd3", {"rescale_betas_zero_snr": True}, "remove rescale_betas_zero_snr"),
    ("flux", {"invert_sigmas": True}, "remove invert_sigmas=True"),
]


def config_folder(root, pipeline, **scheduler):
    """A pipeline folder as save_pretrained lays it out, with empty component folders and the given scheduler keys."""
    cls, parts, own = PIPELINES[pipeline]
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": cls, **{p: ["x", "y"] for p in parts}}))
    for part in parts:
        (root / part).mkdir()
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, **own, **scheduler}
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    return root


@pytest.mark.parametrize("pipeline, keys, words", BAD_SCHEDULERS, ids=lambda v: str(v)[:30])
def test_a_flow_folder_asking_for_eps_settings_is_one_line_exit_2(pipeline, keys, words, tmp_path, capsys):
    folder = config_folder(tmp_path / pipeline, pipeline, **keys)
    results = tmp_path / "r.db"
    assert cli.main(["sweep", "--pairing", "final-zero", "--model", str(folder), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert str(folder / "scheduler" / "scheduler_config.json") in err  # the file to edit
    assert not results.exists()


def test_a_flow_checkpoint_file_is_refused_from_its_config_folder_before_its_weights(tmp_path, capsys, monkeypatch):
    from diffusers import StableDiffusion3Pipeline

    def from_single_file(*_, **__):
        raise AssertionError("the weights were read before the scheduler config was checked")

    monkeypatch.setattr(StableDiffusion3Pipeline, "from_single_file", staticmethod(from_single_file))
    config_folder(tmp_path / "sd3.5", "sd3", prediction_type="v_prediction")
    (tmp_path / "sd3.5.safetensors").write_bytes(b"not read")
    assert cli.main(["sweep", "--pairing", "final-zero", "--model", str(tmp_path / "sd3.5.safetensors"),
                     "--results", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'sd3.5' / 'scheduler' / 'scheduler_config.json'}: remove " \
        "prediction_type 'v_prediction'" in err, err


def test_a_hub_pipelines_scheduler_is_checked_by_name_and_flow_prediction_passes():
    from sampler_lib.models.sd3 import check_scheduler

    flow = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
    for ok in ({}, {"prediction_type": "flow_prediction"}, {"beta_schedule": None, "rescale_betas_zero_snr": False}):
        check_scheduler("org/sd3", {**flow, **ok}, "SD3")
    with pytest.raises(ValueError) as err:
        check_scheduler("org/sd3", {**flow, "prediction_type": "sample"}, "SD3")
    assert str(err.value).startswith("org/sd3/scheduler/scheduler_config.json: remove prediction_type 'sample'")
    assert "\n" not in str(err.value)
