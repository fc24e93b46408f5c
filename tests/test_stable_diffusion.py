"""The SD path on a tiny randomly initialised pipeline built from configs: no download."""
import json

import pytest
import torch

from sampler_lib import DiscreteEpsDenoiser, DiscreteVDenoiser, get_sigmas_karras, sample_heun
from sampler_lib.models import Model, load_model
from sampler_lib.models.stable_diffusion import WeightsUnavailable

WORDS = ["a", "red", "circle", "photo", "of", "cat"]


def write_tokenizer(tok_dir):
    """A CLIP tokenizer over letters and WORDS, written where diffusers looks for it; its vocabulary size."""
    from transformers import CLIPTokenizer

    tok_dir.mkdir(parents=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>"] + letters
                                         + [c + "</w>" for c in letters] + [w + "</w>" for w in WORDS])}
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                  model_max_length=16).save_pretrained(tok_dir)
    return len(vocab)


def tiny_pipeline(root, prediction_type):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    vocab_size = write_tokenizer(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                 num_attention_heads=2, num_hidden_layers=1, max_position_embeddings=16,
                                 bos_token_id=0, eos_token_id=1, pad_token_id=1)
                  ).save_pretrained(root / "text_encoder")
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                         block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=2, norm_num_groups=4).save_pretrained(root / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                  norm_num_groups=4, sample_size=16).save_pretrained(root / "vae")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type=prediction_type).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def tiny_sd(request, tmp_path_factory):
    root = tiny_pipeline(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, load_model(str(root), device="cpu")


def test_tiny_pipeline_loads_with_the_right_wrapper(tiny_sd):
    prediction_type, model = tiny_sd
    den = model.denoiser("paper")
    expected = DiscreteVDenoiser if prediction_type == "v_prediction" else DiscreteEpsDenoiser
    assert type(den) is expected and den.quantize == "paper"
    assert model.latent_shape == (4, 8, 8)
    assert isinstance(model, Model) and model.network is model.net
    assert model.prompts() is None and model.faithful("a cat", None) is None  # free text, nothing to judge by
    assert float(den.sigma_min) == pytest.approx(0.0292, abs=1e-4)
    assert float(den.sigma_max) == pytest.approx(14.6146, abs=1e-3)


def test_guidance_is_one_batched_forward(tiny_sd, monkeypatch):
    _, model = tiny_sd
    seen = []
    forward = model.net.unet.forward
    monkeypatch.setattr(model.net.unet, "forward",
                        lambda x, t, **kw: seen.append(x.shape[0]) or forward(x, t, **kw))
    args = model.condition("a red circle", guidance_scale=5.0)
    x = torch.randn(3, *model.latent_shape)
    den = model.denoiser()
    den(x, torch.full((3,), 2.0), **args)
    assert seen == [6], "cond and uncond must go through the UNet as one batch of 2B"
    # guidance 1 needs no unconditional pass, and equals the conditional prediction.
    seen.clear()
    one = den(x, torch.full((3,), 2.0), **model.condition("a red circle", guidance_scale=1.0))
    assert seen == [3]
    cond_only = den(x, torch.full((3,), 2.0), **{**args, "uncond": args["cond"]})
    torch.testing.assert_close(one, cond_only, rtol=1e-4, atol=1e-4)


def test_sample_and_decode(tiny_sd):
    _, model = tiny_sd
    den = model.denoiser("ingress")
    sigmas = get_sigmas_karras(4, float(den.sigma_min), float(den.sigma_max))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, *model.latent_shape), generator=gen) * sigmas[0]
    out = sample_heun(den, x, sigmas, extra_args=model.condition("a photo of a cat", 3.0), disable=True)
    images = model.decode(out)
    assert len(images) == 2 and images[0].size == (16, 16) and images[0].mode == "RGB"


def test_bad_guidance(tiny_sd):
    _, model = tiny_sd
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="guidance_scale"):
            model.condition("a cat", guidance_scale=bad)


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(WeightsUnavailable, match="embedded model"):
        load_model(str(tmp_path / "no-such-model"), local_files_only=True)
