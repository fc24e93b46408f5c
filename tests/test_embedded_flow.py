"""The embedded flow model (#34 item 4): the interface, its card and weights, the flow parameterisation, a pair
through the engine, faithfulness at 25 Euler steps, the CLI and app menu, and its trainer on a tiny run."""
import json

import numpy as np
import pytest
import torch

from sampler_lib.model_sampling import FlowSampling
from sampler_lib.models import PromptError, load_model
from sampler_lib.models.embedded_flow import WEIGHTS_DIR
from sampler_lib.models.quality import generate
from sampler_lib.models.shapes import COLORS, SHAPES
from sampler_lib.wrappers import Denoiser


@pytest.fixture(scope="module")
def model():
    return load_model("embedded-flow", device="cpu")


def test_interface_and_card(model):
    from sampler_lib.models import Model
    assert isinstance(model, Model) and model.name == "embedded-flow"
    assert model.network is model.eps and model.latent_shape == (3, 32, 32)
    assert model.prompts() == load_model("embedded", device="cpu").prompts()
    sampling = model.model_sampling
    assert isinstance(sampling, FlowSampling) and sampling.kind == "flow"
    card = model.card
    assert card["name"] == "embedded-flow" and card["prediction_type"] == "flow"
    assert sampling.shift == card["schedule"]["shift"] and card["schedule"]["num_train_timesteps"] == 1000
    assert card["training"]["steps"] > 0 and card["training_seconds"] > 0 and card["final_loss"] > 0
    assert card["training"]["time_sampling"] in ("uniform", "logit_normal")
    assert card["quality"]["colour_overall"] >= 0.9 and card["quality"]["shape_overall"] >= 0.75
    den = model.denoiser("paper")
    assert isinstance(den, Denoiser) and den.quantize == "paper" and len(den.sigmas) == 1000
    assert float(den.sigma_min) == pytest.approx(0.001) and float(den.sigma_max) == 1.0


def test_weights_are_shipped_small():
    assert (WEIGHTS_DIR / "model.safetensors").stat().st_size <= 8 * 2 ** 20
    card = json.loads((WEIGHTS_DIR / "card.json").read_text())
    assert card["architecture"]["parameters"] < 2_000_000  # the eps model's size class (1.81 M)


def test_flow_parameterisation(model):
    """denoised = x - sigma * v, the network at timestep sigma * 1000 (the grid's in ingress), x itself its input;
    a sampler starts from the noise itself at sigma 1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    cond = model.condition("a red circle", 3.0)
    sigma = torch.tensor([0.7, 0.2504])
    with torch.no_grad():
        v = model.network(x, sigma * 1000, **cond)
        torch.testing.assert_close(model.denoiser("off")(x, sigma, **cond), x - sigma[:, None, None, None] * v)
        v_grid = model.network(x, torch.tensor([700.0, 250.0]), **cond)
        out = model.denoiser("ingress")(x, sigma, **cond)
    torch.testing.assert_close(out, x - sigma[:, None, None, None] * v_grid)
    noise = torch.randn(1, 3, 32, 32, generator=gen)
    assert torch.equal(model.model_sampling.initial_latent(noise, torch.tensor(1.0)), noise)


def test_guidance_is_one_batched_forward(model, monkeypatch):
    calls = []
    forward = model.eps.unet.forward
    monkeypatch.setattr(model.eps.unet, "forward", lambda x, t, c: calls.append(x.shape[0]) or forward(x, t, c))
    model.denoiser()(torch.zeros(3, 3, 32, 32), torch.full((3,), 0.5), **model.condition("a red circle", 3.0))
    assert calls == [6]


def test_prompts_are_the_eps_models(model):
    with pytest.raises(PromptError, match="pink"):
        model.condition("a pink circle")
    assert model.faithful("", None) is None


def test_a_pair_through_the_engine(model):
    from comparisons.core.config import SamplerConfig, make_pair
    from comparisons.core.pairs import run_pair
    a, b = make_pair("discretization", SamplerConfig(sampler="euler", steps=6, schedule="simple"))
    pair = run_pair(model, a, b, "a blue square", 3)
    again = run_pair(model, a, b, "a blue square", 3)
    assert pair.lockstep and pair.a.image.size == (32, 32)
    assert np.array_equal(np.asarray(pair.a.image), np.asarray(again.a.image))
    assert pair.a.sigmas[0] == pytest.approx(1.0) and pair.a.sigmas[-1] == 0


def test_faithful_at_25_euler_steps(model):
    """Six prompts (six colours, every shape), 25 Euler steps on the simple schedule, guidance 3 (the card: 128
    samples, Heun and Euler)."""
    prompts = [f"a {c} {SHAPES[i % len(SHAPES)]}" for i, c in enumerate(list(COLORS)[:6])]
    images = generate(model, prompts, list(range(100, 100 + len(prompts))), steps=25, sampler="euler")
    right = [model.faithful(p, img) for p, img in zip(prompts, images)]
    assert sum(right) >= 5, right


def test_cli_and_app_offer_it_beside_the_default(tmp_path):
    import app
    from tests.conftest import run_cli
    settings = app.Settings(app.parse_args([]))
    assert settings.model == "embedded" and settings.models[:2] == ["embedded", "embedded-flow"]
    assert app.Settings(app.parse_args(["--hosted"])).models == ["embedded"]
    assert app.Settings(app.parse_args(["--hosted", "--model", "embedded-flow"])).models == ["embedded-flow"]
    code, out, err = run_cli(["sweep", "--model", "embedded-flow", "--pairing", "final-zero", "--sampler", "euler",
                              "--steps", "4", "--seeds", "0", "--results",
                              str(tmp_path / "r.db")])
    assert code == 0, err
    assert "model embedded-flow" in out


def test_trainer_runs_two_steps_into_a_tmp_folder(tmp_path):
    from sampler_lib.models.embedded_flow import EmbeddedFlowModel
    from sampler_lib.models.shapes import DataConfig
    from sampler_lib.models.train_embedded_flow import FlowTrainConfig, train
    shipped = (WEIGHTS_DIR / "model.safetensors").stat().st_mtime_ns
    cfg = FlowTrainConfig(steps=2, batch_size=2, warmup=1, init="scratch")
    card = train(cfg, DataConfig(), tmp_path, log_every=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "model.safetensors", "train_log.csv"]
    assert card["training"]["steps"] == 2 and np.isfinite(card["final_loss"])
    assert (tmp_path / "train_log.csv").read_text().splitlines()[0] == "step,mean_loss,seconds"
    assert EmbeddedFlowModel.load(tmp_path, device="cpu").card == json.loads(json.dumps(card))
    assert (WEIGHTS_DIR / "model.safetensors").stat().st_mtime_ns == shipped  # nothing written into the repo


def test_flow_loss_is_zero_for_the_true_velocity():
    from sampler_lib.models.train_embedded_flow import flow_loss
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=gen), torch.randn(4, 3, 8, 8, generator=gen)
    t = torch.tensor([0.1, 0.4, 0.7, 0.99])
    seen = {}

    def oracle(x_t, timestep, class_labels):  # x_t = (1 - t) x0 + t noise, so v = noise - x0
        seen["t"] = timestep
        tt = t[:, None, None, None]
        torch.testing.assert_close(x_t, (1 - tt) * x0 + tt * noise)
        return noise - x0

    assert float(flow_loss(oracle, x0, torch.zeros(4, dtype=torch.long), t, noise)) == 0
    torch.testing.assert_close(seen["t"], t * 1000)
