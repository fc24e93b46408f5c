"""The embedded model: offline load, determinism, prompt checks, colour and shape faithfulness."""
import numpy as np
import pytest
import torch

from sampler_lib import get_sigmas_karras, sample_heun
from sampler_lib.models import load_model
from sampler_lib.models.quality import faithfulness, generate
from sampler_lib.models.shapes import COLORS, NUM_CLASSES, SHAPES, DataConfig, classify, render


@pytest.fixture(scope="module")
def model():
    return load_model("embedded")


def test_interface(model):
    from sampler_lib.models import Model
    from tests.fakes import FakeModel
    assert isinstance(model, Model) and isinstance(FakeModel(), Model)  # the interface docs/ARCHITECTURE.md names
    assert model.network is model.eps and len(model.prompts()) == len(COLORS) * len(SHAPES)
    assert model.latent_shape == (3, 32, 32)
    assert set(model.vocabulary["colors"]) == set(COLORS) and model.vocabulary["shapes"] == SHAPES
    den = model.denoiser("paper")
    assert den.quantize == "paper" and len(den.sigmas) == 1000
    assert float(den.sigma_min) == pytest.approx(0.0292, abs=1e-4)
    assert float(den.sigma_max) == pytest.approx(14.6146, abs=1e-3)
    card = model.card
    assert card["prediction_type"] == "epsilon" and card["final_loss"] > 0 and card["training_seconds"] > 0
    assert card["quality"]["colour_overall"] >= 0.9 and card["quality"]["shape_overall"] >= 0.8


def test_ten_step_sample_is_deterministic(model):
    a = generate(model, ["a red circle", "a blue square"], [1, 2], steps=10)
    b = generate(model, ["a red circle", "a blue square"], [1, 2], steps=10)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert a[0].size == (32, 32) and a[0].mode == "RGB"


def test_guidance_is_one_batched_forward(model, monkeypatch):
    calls = []
    forward = model.eps.unet.forward
    monkeypatch.setattr(model.eps.unet, "forward", lambda x, t, c: calls.append(x.shape[0]) or forward(x, t, c))
    den = model.denoiser()
    den(torch.zeros(3, 3, 32, 32), torch.full((3,), 1.0), **model.condition("a red circle", 3.0))
    assert calls == [6]


@pytest.mark.parametrize("prompt, word", [("a pink circle", "pink"), ("a red hexagon", "hexagon"),
                                          ("a red circle please", "please")])
def test_unknown_words_are_named_with_the_vocabulary(model, prompt, word):
    with pytest.raises(ValueError, match=word) as info:
        model.condition(prompt)
    assert "magenta" in str(info.value) and "triangle" in str(info.value)


def test_prompt_needs_colour_and_shape_and_valid_guidance(model):
    with pytest.raises(ValueError, match="both a colour"):
        model.condition("a red")
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guidance_scale"):
            model.condition("a red circle", bad)
    assert int(model.condition("")["labels"]) == NUM_CLASSES  # the empty prompt is unconditional


def test_colour_and_shape_faithfulness_small_sample(model):
    q = faithfulness(model, per_colour=4, steps=10)  # measured at 10 and 12 steps: colour 1.0, shape 0.94
    assert q["samples"] == 32
    assert q["colour_overall"] >= 0.9, q
    assert q["shape_overall"] >= 0.75, q


def test_shape_check_on_rendered_data():
    gen = torch.Generator().manual_seed(123)
    labels = torch.arange(NUM_CLASSES).repeat(8)
    images = (render(labels, gen, DataConfig()) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    right = [classify(img) == (list(COLORS)[int(lab) // len(SHAPES)], SHAPES[int(lab) % len(SHAPES)])
             for img, lab in zip(images, labels)]
    assert sum(right) / len(right) >= 0.98


def test_sampling_uses_the_sd_schedule(model):
    den = model.denoiser("off")
    sigmas = get_sigmas_karras(3, float(den.sigma_min), float(den.sigma_max))
    out = sample_heun(den, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * sigmas[0],
                      sigmas, extra_args=model.condition("a green ring"), disable=True)
    assert torch.isfinite(out).all()


def test_light_unet_matches_diffusers(model):
    from sampler_lib.models.embedded import architecture, build_unet
    reference = build_unet(architecture(model.card)).eval()
    reference.load_state_dict(model.eps.unet.state_dict())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=gen)
    t, labels = torch.tensor([0.0, 10.5, 500.0, 999.0]), torch.tensor([0, 5, NUM_CLASSES, 17])
    with torch.no_grad():
        torch.testing.assert_close(model.eps.unet(x, t, labels), reference(x, t, class_labels=labels).sample,
                                   rtol=1e-5, atol=1e-5)
