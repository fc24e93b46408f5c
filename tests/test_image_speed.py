"""Images made elsewhere at speed (#36 item 3), guarded by what is computed and kept, never by seconds: FLIP in torch
is NVIDIA's FLIP, LPIPS runs at the scale the result states, and a campaign's measure_all streams (it keeps numbers,
not pixels). The timings are in BENCHMARKS.md ("Images made elsewhere"), from bench/bench_inspect.py and
bench/bench_image_campaign.py."""
import numpy as np
import pytest
from PIL import Image

from comparisons.core import visibility
from comparisons.core.image_files import Picture
from comparisons.core.visibility import display_scale, flip_map
from comparisons.workflows import image_campaign
from comparisons.workflows.inspect_pair import LPIPS_NATIVE_PIXELS, lpips_of, measure_rgb
from tests.image_fixtures import picture, save_comfyui


class RecordingLPIPS:
    """Stands in for core.metrics.LPIPS: records the size of every pair it is given."""

    def __init__(self):
        self.shapes = []

    def __call__(self, a, b):
        assert a.shape == b.shape and a.dtype == np.uint8
        self.shapes.append(a.shape[:2])
        return 0.05, np.zeros(a.shape[:2], np.float32)


def _nvidia_flip(a, b):
    flip_evaluator = pytest.importorskip("flip_evaluator")
    k = display_scale(*a.shape[:2])
    shown = [np.repeat(np.repeat(x.astype(np.float32) / 255, k, 0), k, 1) for x in (a, b)]
    error, _, _ = flip_evaluator.evaluate(shown[0], shown[1], "LDR", applyMagma=False, computeMeanError=False,
                                          parameters={"ppd": visibility.FLIP_PPD})
    return np.asarray(error, np.float32).reshape(shown[0].shape[:2])


def _pairs():
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)  # shown x5: 240x200
    yield "noise, upscaled", noise, np.clip(noise + rng.integers(-6, 7, noise.shape), 0, 255).astype(np.uint8)
    odd = rng.integers(0, 256, (300, 517, 3), dtype=np.uint8)  # native, more than one strip of rows, odd width
    yield "odd size", odd, np.clip(odd.astype(int) + rng.integers(-3, 4, odd.shape), 0, 255).astype(np.uint8)
    a = np.asarray(picture(320, 1))
    yield "disc moved", a, np.asarray(picture(320, 1, shift=2))
    b = a.copy()
    b[:3, :3] = 0
    b[-2:, -5:] = 255  # the borders (replicated, as FLIP pads)
    b[100, 100] = (b[100, 100].astype(int) + 1) % 256
    yield "corners and one step", a, b


@pytest.mark.parametrize("name,a,b", list(_pairs()), ids=[p[0] for p in _pairs()])
def test_flip_in_torch_is_nvidias_flip(name, a, b):
    """The visibility rule's numbers are NVIDIA's flip_evaluator's, to 1e-4 a pixel (float32 both)."""
    ours, theirs = flip_map(a, b), _nvidia_flip(a, b)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-4, (name, np.abs(ours - theirs).max())
    assert abs(float(ours.max()) - float(theirs.max())) < 1e-4
    assert flip_map(a, a).max() == 0.0


@pytest.mark.parametrize("h,w,k", [(512, 512, 1), (1024, 1024, 2), (1920, 1088, 3), (2048, 2048, 4)])
def test_lpips_runs_at_the_scale_it_states(h, w, k):
    """LPIPS at the images' own resolution up to 512x512 pixels' worth, box-downscaled by a whole factor above,
    and the text stored with the pair says so, and that FLIP, PSNR, SSIM and max |Δ| see every pixel."""
    a = np.zeros((h, w, 3), np.uint8)
    metric = RecordingLPIPS()
    _, spatial, how = lpips_of(metric, a, a)
    sh, sw = -(-h // k), -(-w // k)
    assert metric.shapes == [(sh, sw)] and spatial.shape == (sh, sw)
    assert k == 1 or sh * sw <= LPIPS_NATIVE_PIXELS < h * w
    if k == 1:
        assert how == f"LPIPS at the images' own resolution ({w}x{h})"
    else:
        assert how.startswith(f"LPIPS on both images box-downscaled 1/{k} to {sw}x{sh}") and f"FLIP at {w}x{h}" in how
        assert "PSNR, SSIM and max |Δ| on every pixel" in how


def test_a_measured_pair_uses_every_pixel_but_for_lpips():
    h, w = 640, 576
    a = np.zeros((h, w, 3), np.uint8)
    b = a.copy()
    b[h // 2, w // 2] = 200
    metric = RecordingLPIPS()
    result = measure_rgb(metric, a, b)
    assert metric.shapes == [(320, 288)] and result["maps"]["flip"].shape == (h, w)
    assert result["metrics"]["max_abs_diff"] == 200 and result["visibility"]["max_abs_diff"] == 200
    assert "FLIP at 576x640" in result["lpips_how"] and "native size, 640 px" in result["visibility"]["rule"]
    assert not result["visibility"]["below"]


def _walk(value):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v)


def test_measure_all_streams_keeping_numbers_not_pixels(tmp_path, monkeypatch):
    """measure_all reads every file once (the next pair ahead, in a thread), measures it and keeps numbers,
    metadata and hashes: no array, no bytes, no picture; what it keeps a pair does not grow with the image."""
    n = 6
    for side, scheduler, shift in (("A", "karras", 0), ("B", "beta", 2)):
        (tmp_path / side).mkdir()
        for k in range(n):
            save_comfyui(tmp_path / side / f"ComfyUI_{k:05d}_.png", picture(64 + 32 * k, k, shift=shift),
                         scheduler=scheduler, seed=k)
    sources, _ = image_campaign.pairs_from_folders(tmp_path / "A", tmp_path / "B")
    reads = []
    real_load = image_campaign.load
    monkeypatch.setattr(image_campaign, "load", lambda path: reads.append(path) or real_load(path))
    done = []
    measured = image_campaign.measure_all(sources, RecordingLPIPS(), lambda k, total: done.append((k, total)))
    assert sorted(reads) == sorted([s.a for s in sources] + [s.b for s in sources])  # each file once
    assert done == [(k, n) for k in range(1, n + 1)] and len(measured) == n
    for src, kept in measured:
        assert set(kept) == {"sha", "metrics", "meta", "alpha", "lpips_how"}
        leaves = list(_walk(kept))
        assert not [x for x in leaves if isinstance(x, (np.ndarray, bytes, bytearray, Picture, Image.Image))]
        assert all(isinstance(v, (int, float)) for v in kept["metrics"].values())
    sizes = [len(repr(kept)) for _, kept in measured]
    assert max(sizes) - min(sizes) < 200, sizes  # 64² to 224² images: the same few numbers and texts each
