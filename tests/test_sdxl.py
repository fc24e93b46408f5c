"""SDXL through diffusers on a tiny randomly initialised pipeline written here (two CLIP encoders, the second with a
projection; a UNet with addition_embed_type="text_time"): its conditioning against diffusers' own pipeline, a
pair, a study and the app's model menu; a refiner; bad folders and checkpoints refused in one line."""
import json

import pytest
import torch

from sampler_lib import DiscreteEpsDenoiser, DiscreteVDenoiser
from sampler_lib.models import Model, load_model
from sampler_lib.models.sdxl import StableDiffusionXLModel
from tests.conftest import run_cli
from tests.test_stable_diffusion import write_tokenizer

TIME_DIM, WIDTH = 8, 16


def tiny_sdxl(root, prediction_type="epsilon", refiner=False):
    """A tiny SDXL pipeline as save_pretrained writes one (a refiner: no first encoder, an aesthetic score)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    text = dict(hidden_size=WIDTH, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    index = {"_class_name": "StableDiffusionXLImg2ImgPipeline" if refiner else "StableDiffusionXLPipeline",
             "_diffusers_version": "0.42.1", "force_zeros_for_empty_prompt": not refiner,
             "requires_aesthetics_score": refiner, "tokenizer": [None, None], "text_encoder": [None, None],
             "tokenizer_2": ["transformers", "CLIPTokenizer"],
             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    if not refiner:
        vocab = write_tokenizer(root / "tokenizer")
        CLIPTextModel(CLIPTextConfig(vocab_size=vocab, **text)).save_pretrained(root / "text_encoder")
        index.update(tokenizer=["transformers", "CLIPTokenizer"], text_encoder=["transformers", "CLIPTextModel"])
    vocab = write_tokenizer(root / "tokenizer_2")
    CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=vocab, projection_dim=WIDTH, **text)
                                ).save_pretrained(root / "text_encoder_2")
    ids = 5 if refiner else 6
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                         cross_attention_dim=WIDTH if refiner else 2 * WIDTH, attention_head_dim=2, norm_num_groups=4,
                         addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
                         projection_class_embeddings_input_dim=WIDTH + ids * TIME_DIM).save_pretrained(root / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                  norm_num_groups=4, sample_size=16, scaling_factor=0.13025).save_pretrained(root / "vae")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type=prediction_type).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return tiny_sdxl(tmp_path_factory.mktemp("sdxl"))


@pytest.fixture(scope="module")
def sdxl(sdxl_dir):
    return load_model(str(sdxl_dir), device="cpu")


def test_sdxl_loads_with_its_conditioning(sdxl):
    assert isinstance(sdxl, StableDiffusionXLModel) and isinstance(sdxl, Model)
    assert sdxl.latent_shape == (4, 8, 8) and sdxl.image_size == 16 and sdxl.card["pipeline"] == "sdxl"
    assert type(sdxl.denoiser("paper")) is DiscreteEpsDenoiser
    args = sdxl.condition("a red circle", 5.0)
    assert args["cond"].shape == (1, 16, 2 * WIDTH) and args["pooled"].shape == (1, WIDTH)
    assert args["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] and args["time_ids_uncond"] is not args["time_ids"]
    # force_zeros_for_empty_prompt: the unconditional embeddings are zeros, as the SDXL pipeline makes them.
    assert not args["uncond"].any() and not args["pooled_uncond"].any()


def test_conditioning_and_prediction_equal_diffusers_pipeline(sdxl, sdxl_dir):
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl_dir), local_files_only=True)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt("a red circle", device="cpu",
                                                                   do_classifier_free_guidance=True)
    args = sdxl.condition("a red circle", 5.0)
    torch.testing.assert_close(args["cond"], embeds)
    torch.testing.assert_close(args["pooled"], pooled)
    torch.testing.assert_close(args["uncond"], negative)
    torch.testing.assert_close(args["pooled_uncond"], negative_pooled)
    ids = pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), dtype=torch.float32,
                                 text_encoder_projection_dim=WIDTH)
    torch.testing.assert_close(args["time_ids"], ids)
    # One guided network call equals the pipeline's two UNet calls combined by hand (Ho & Salimans).
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500.0, 500.0])
    kw = lambda e, p: dict(encoder_hidden_states=e.expand(2, -1, -1),  # noqa: E731
                           added_cond_kwargs={"text_embeds": p.expand(2, -1), "time_ids": ids.expand(2, -1)})
    eps_c = pipe.unet(x, t, **kw(embeds, pooled)).sample
    eps_u = pipe.unet(x, t, **kw(negative, negative_pooled)).sample
    torch.testing.assert_close(sdxl.network(x, t, **args), eps_u + 5.0 * (eps_c - eps_u), rtol=1e-4, atol=1e-5)


def test_v_prediction_and_a_refiner(tmp_path):
    v = load_model(str(tiny_sdxl(tmp_path / "v", "v_prediction")), device="cpu")
    assert type(v.denoiser()) is DiscreteVDenoiser and v.card["prediction_type"] == "v_prediction"
    refiner = load_model(str(tiny_sdxl(tmp_path / "r", refiner=True)), device="cpu")
    args = refiner.condition("a cat", 4.0)
    # A refiner: the second encoder alone, and an aesthetic score (6 conditional, 2.5 unconditional) for the target.
    assert args["cond"].shape == (1, 16, WIDTH) and args["time_ids"].tolist() == [[16, 16, 0, 0, 6.0]]
    assert args["time_ids_uncond"].tolist() == [[16, 16, 0, 0, 2.5]] and args["uncond"].any()
    out = refiner.denoiser()(torch.randn(2, 4, 8, 8), torch.full((2,), 3.0), **args)
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


def test_a_study_and_a_pair_in_the_app_on_sdxl(sdxl, sdxl_dir, tmp_path):
    code, text, err = run_cli(["study", "--model", str(sdxl_dir), "--questions", "final-zero", "--samplers", "euler",
                               "--steps", "2", "--seeds", "0-1", "--prompts", "a red circle", "--reference",
                               '{"steps": 4}', "--reference-check", "0", "--guidance", "5", "--results",
                               str(tmp_path / "r.db"), "--out", str(tmp_path / "study")])
    assert code == 0 and "study study: 2 rows" in text, err
    # The app's model menu offers it beside the embedded model, and a blind pair runs on it as the app runs one.
    import app
    from comparisons.core.config import make_pair
    from comparisons.workflows.blind import new_pair
    from comparisons.workflows.lab import Lab
    settings = app.Settings(app.parse_args(["--model", str(sdxl_dir), "--results", str(tmp_path / "app.db")]))
    assert settings.models == ["embedded", "embedded-flow", str(sdxl_dir)]
    lab = Lab(tmp_path / "app.db", load=lambda name: sdxl if name == str(sdxl_dir) else load_model(name))
    demo = app.build_app(lab, settings)
    menu = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model")
    assert [value for _, value in menu.choices] == ["embedded", "embedded-flow", str(sdxl_dir)]
    out = new_pair(lab, "a red circle", 3, *make_pair("final-zero"), "final-zero", "s", model=str(sdxl_dir))
    assert out["left"].size == (16, 16) and out["metrics"]["lpips"] >= 0
    assert lab.store.pair(out["pair_id"])["model"] == str(sdxl_dir)


def test_bad_sdxl_input_is_one_line_exit_2(sdxl_dir, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(sdxl_dir, broken)
    shutil.rmtree(broken / "text_encoder_2")
    cases = [(broken, "lacks text_encoder_2/"),
             (tmp_path / "model.safetensors", "needs its diffusers config folder beside it")]
    from safetensors.torch import save_file
    save_file({"v_pred": torch.zeros(1), "w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    vpred = tmp_path / "vp" / "model.safetensors"
    vpred.parent.mkdir()
    shutil.copy(tmp_path / "model.safetensors", vpred)
    shutil.copytree(sdxl_dir, vpred.with_suffix(""), ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    cases.append((vpred, "is a v-prediction checkpoint (it holds a 'v_pred' key)"))
    for model, message in cases:
        code, _, err = run_cli(["study", "--model", str(model), "--out", str(tmp_path / "out"), "--results",
                                str(tmp_path / "r.db")])
        assert code == 2 and len(err) == 1 and message in err[0], (model, err)
        assert not (tmp_path / "r.db").exists() and not (tmp_path / "out").exists()


def test_a_single_checkpoint_file_loads_through_the_config_folder_beside_it(sdxl_dir, tmp_path, monkeypatch):
    """The wiring around diffusers' from_single_file (its key conversion is diffusers' own and needs a real
    original-layout checkpoint): called offline with the folder beside the file, its components become the model."""
    import shutil

    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file
    checkpoint = tmp_path / "fine-tune.safetensors"
    save_file({"model.diffusion_model.out.2.bias": torch.zeros(4)}, str(checkpoint))
    shutil.copytree(sdxl_dir, tmp_path / "fine-tune", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    calls = []

    def from_single_file(path, **kw):
        calls.append((path, kw))
        return StableDiffusionXLPipeline.from_pretrained(str(sdxl_dir), local_files_only=True)

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_single_file", staticmethod(from_single_file))
    model = load_model(str(checkpoint), device="cpu")
    assert calls == [(str(checkpoint), {"config": str(tmp_path / "fine-tune"), "local_files_only": True,
                                        "torch_dtype": torch.float32})]
    assert isinstance(model, StableDiffusionXLModel) and model.name == str(checkpoint)
    out = model.denoiser("paper")(torch.randn(1, 4, 8, 8), torch.full((1,), 2.0), **model.condition("a cat", 5.0))
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
