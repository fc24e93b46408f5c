"""A fast stand-in with the model interface, for tests that exercise plumbing rather than quality."""
import torch

from sampler_lib import DiscreteEpsDenoiser, EpsSampling, scaled_linear_alphas_cumprod
from sampler_lib.models.guidance import check_guidance, to_pil


def cond_eps(x, t, bias=None, guidance_scale=1.0):
    t = t.float()[:, None, None, None]
    return torch.tanh(x * (0.5 + t / 1000)) + (0.0 if bias is None else bias * guidance_scale * 0.01)


class FakeModel:
    name = "fake"
    latent_shape = (3, 16, 16)
    vocabulary = {"colors": {"red": (255, 0, 0)}, "shapes": ["circle"]}
    card = {"name": "fake"}
    device = torch.device("cpu")
    network = None  # cond_eps is a plain function: nothing to compile

    def __init__(self):
        self.alphas_cumprod = scaled_linear_alphas_cumprod()
        self.model_sampling = EpsSampling(self.alphas_cumprod)

    def denoiser(self, quantize="off"):
        return DiscreteEpsDenoiser(cond_eps, self.alphas_cumprod, quantize=quantize)

    def condition(self, prompt, guidance_scale=3.0):
        g = check_guidance(guidance_scale)
        if any(w not in ("a", "red", "circle") for w in prompt.split()):
            raise ValueError(f"prompt {prompt!r}: unknown word")
        return {"bias": torch.tensor(float(len(prompt))), "guidance_scale": g}

    def decode_float(self, x):
        return x.float()

    def decode(self, x):
        return to_pil(x)

    def prompts(self):
        return ["a red circle"]

    def faithful(self, prompt, image):
        return None


def vote_store(path, pairs=300, votes=1500, seed=0, one_question=False):
    """A results file of synthetic pairs and votes (seeded, so the same arguments give the same store): configs
    over steps x discretization, four pairings, three prompts, every kind of winner, some config-vs-itself pairs;
    for the statistics' tests and the scale benchmarks."""
    import random

    from PIL import Image

    from comparisons.core.config import SamplerConfig
    from comparisons.results.store import ResultsStore

    store = ResultsStore(path)
    image = store.save_image(Image.new("RGB", (4, 4)), {})
    rng = random.Random(seed)
    configs = [SamplerConfig(steps=s, quantize=q) for s in (4, 7, 10, 25) for q in ("off", "paper", "ingress")]
    prompts = ["a red circle", "a blue square", "a green triangle"]
    with store._transaction() as conn:
        ids = []
        for i in range(pairs):
            if one_question:
                a, b = configs[:2]
            else:
                a, b = rng.sample(configs, 2) if rng.random() < 0.95 else [configs[3]] * 2
            ids.append(store._insert_pair(
                conn, pairing="custom" if one_question else rng.choice(["custom", "paper", "final-zero", "sigma-min"]),
                model="embedded", prompt=rng.choice(prompts), seed=i, config_a=a, config_b=b, image_a=image,
                image_b=image, metrics={"lpips": rng.random() * 0.1}, sigmas_a=[1.0], sigmas_b=[1.0], lockstep=True,
                seconds=0.1))
        rows = [(ids[i % pairs], rng.choices(("A", "B", "tie", "both_bad"), (45, 40, 10, 5))[0], rng.choice("AB"),
                 f"s{i}", i) for i in range(votes)]
        conn.executemany("INSERT INTO votes (pair_id, winner, left_config, session, note, created) "
                         "VALUES (?, ?, ?, ?, '', ?)", rows)
    return store
