"""Any two images of one size, measured as a generated pair is (LPIPS and its map, FLIP and the visibility line,
PSNR, SSIM, max |Δ|) without sampling anything: `python -m comparisons inspect`, the app's Inspect tab, and every
pair of a campaign made from image files."""
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.image_files import alpha_note, check_pair, load
from ..core.metrics import pixel_metrics
from ..core.visibility import flip_map, pair_maps, visibility
from ..files import replacing
from . import pair_view

# LPIPS runs at the images' own resolution up to this many pixels; larger images are box-downscaled by the smallest
# whole factor that fits (1024x1024 -> 512x512), and the result says so. LPIPS is reported, never asked for a
# verdict, and the views show a pair fitted to DISPLAY_MAX px until zoomed; at 512x512 it costs a quarter of
# 1024x1024 (0.1 s against 0.4 s on a 2-core CPU). How far it moves from LPIPS at full size on the test fixtures:
# bench/bench_inspect.py and BENCHMARKS.md.
LPIPS_NATIVE_PIXELS = 512 * 512
GAIN = 8  # the difference maps' gain in the files inspect writes (the app's default)


def lpips_scale(h, w):
    """The whole box-downscale factor LPIPS is computed at for an h x w pair (1: the images' own resolution)."""
    return 1 if h * w <= LPIPS_NATIVE_PIXELS else math.ceil(math.sqrt(h * w / LPIPS_NATIVE_PIXELS))


def lpips_of(metric, a, b):
    """(LPIPS distance, its spatial map, how it was computed) of two uint8 RGB arrays."""
    h, w = a.shape[:2]
    k = lpips_scale(h, w)
    if k == 1:
        distance, spatial = metric(a, b)
        return distance, spatial, f"LPIPS at the images' own resolution ({w}x{h})"
    from PIL import Image

    small = [np.array(Image.fromarray(x).reduce(k)) for x in (a, b)]
    distance, spatial = metric(*small)
    sh, sw = small[0].shape[:2]
    return distance, spatial, (f"LPIPS on both images box-downscaled 1/{k} to {sw}x{sh} (LPIPS runs on at most "
                               f"512x512 pixels' worth; it is reported, never asked for the verdict); FLIP at {w}x{h}, "
                               f"as the visibility rule states; PSNR, SSIM and max |Δ| on every pixel")


def measure_rgb(metric, a, b):
    """Every measure of two uint8 RGB arrays of one size, as a pair of files is measured and stored: metrics (the
    stored columns), the LPIPS and FLIP maps, the visibility line, how LPIPS was computed, seconds per measure.
    PSNR, SSIM and max |Δ| (numpy and scipy, one core, the GIL released) run in a thread beside LPIPS and FLIP
    (torch, both cores), so a pair keeps both cores busy."""
    seconds = {}

    def pixels():
        t = time.perf_counter()
        found = pixel_metrics(a, b)
        seconds["psnr_ssim"] = time.perf_counter() - t
        return found
    with ThreadPoolExecutor(1, thread_name_prefix="pixel-metrics") as pool:
        pixel = pool.submit(pixels)
        t = time.perf_counter()
        distance, spatial, how = lpips_of(metric, a, b)
        seconds["lpips"] = time.perf_counter() - t
        t = time.perf_counter()
        fmap = flip_map(a, b)
        seconds["flip"] = time.perf_counter() - t
        metrics = {"lpips": distance, **pixel.result()}
    return {"metrics": metrics, "maps": {"lpips_spatial": spatial, "flip": fmap},
            "visibility": visibility(a, b, distance, flip=fmap), "lpips_how": how, "seconds": seconds}


def measure(metric, a, b):
    """Everything the app shows of a pair, for two Pictures (core.image_files) of one size: measure_rgb's and the
    FLIP maximum among the metrics, the files, what was done with transparency."""
    check_pair(a, b)
    result = measure_rgb(metric, a.rgb, b.rgb)
    result["metrics"]["flip_max"] = float(result["maps"]["flip"].max())
    return {"a": a, "b": b, **result, "alpha": alpha_note(a, b)}


def inspect_files(metric, path_a, path_b):
    """measure() of two image files; ImageError (one line naming the file) for anything that cannot be compared."""
    return measure(metric, load(path_a), load(path_b))


def summary(result):
    """The JSON-ready part of a result: files, size, metrics, the visibility line, LPIPS's resolution, metadata."""
    a, b = result["a"], result["b"]
    m = result["metrics"]
    return {"a": {"file": a.name, "format": a.format, "metadata": a.meta},
            "b": {"file": b.name, "format": b.format, "metadata": b.meta},
            "size": a.size, "metrics": {**m, "psnr": None if math.isinf(m["psnr"]) else m["psnr"]},
            "visibility": result["visibility"], "lpips_computed": result["lpips_how"],
            "transparency": result["alpha"] or "none", "seconds": result["seconds"]}


def text_report(result):
    """What `inspect` prints: the visibility line, the metrics, how LPIPS was computed, what differs in the
    metadata."""
    s = summary(result)
    m, v = result["metrics"], result["visibility"]
    psnr_text = "inf (identical)" if math.isinf(m["psnr"]) else f"{m['psnr']:.2f} dB"
    lines = [f"A {s['a']['file']} ({result['a'].format}) vs B {s['b']['file']} ({result['b'].format}), {s['size']}",
             v["sentence"],
             f"FLIP max {v['flip_max']:.3f} (visible from {v['flip_threshold']:g}) · max |Δ| {v['max_abs_diff']}/255 · "
             f"{v['visible_share']:.1%} of pixels differ by ≥ 3/255",
             f"LPIPS {m['lpips']:.4g} · PSNR {psnr_text} · SSIM {m['ssim']:.5g}",
             s["lpips_computed"], v["rule"]]
    if result["alpha"]:
        lines.append(result["alpha"])
    lines += metadata_lines(result["a"].meta, result["b"].meta)
    return "\n".join(lines)


def metadata_lines(meta_a, meta_b):
    """One line per side saying what its file states (and, when it ran several sampling passes, one line per pass
    in execution order), then the fields in which they differ, each value on one line (core.image_meta.value_text:
    lists as lists, line breaks shown, never a raw escape)."""
    from ..core.image_meta import comparable, differing, pass_title, value_text
    lines = []
    for side, meta in (("A", meta_a), ("B", meta_b)):
        lines.append(f"{side} metadata: {meta['format']}" + (f" ({meta['note']})" if meta["note"] else ""))
        passes = meta.get("passes") or []
        if len(passes) > 1:
            lines += [f"{side} {pass_title(p, i)}" for i, p in enumerate(passes, 1)]
    diff = differing(meta_a, meta_b, skip=())
    if diff:
        fa, fb = comparable(meta_a, meta_b)
        lines.append("differs: " + "; ".join(f"{k}: {value_text(fa.get(k))} vs {value_text(fb.get(k))}"
                                            for k in diff))
    return lines


def images_meta(result):
    """Both files' metadata as pair_view.metadata_table takes it (and a campaign stores it): {'A': …, 'B': …}."""
    return {side: {"file": Path(p.name).name, **p.meta} for side, p in (("A", result["a"]), ("B", result["b"]))}


def maps(result, gain=GAIN):
    """The four maps of a result as uint8 RGB arrays (core.visibility.pair_maps)."""
    return pair_maps(result["a"].rgb, result["b"].rgb, result["maps"]["lpips_spatial"], result["maps"]["flip"], gain)


def page_html(result, assets, gain=GAIN):
    """inspect.html: the pair side by side and in the flicker view (synced zoom and pan, pixel readout), the
    visibility line, the metrics, the maps with colour bars, both files' metadata. One self-contained file."""
    import html as h
    a, b = result["a"].image(), result["b"].image()
    m = maps(result, gain)
    s = summary(result)
    rows = "".join(f"<tr><th>{h.escape(k)}</th><td>{h.escape(json.dumps(v) if not isinstance(v, str) else v)}</td>"
                   "</tr>" for k, v in s["metrics"].items())
    meta = pair_view.metadata_table(images_meta(result))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>A vs B · inspect</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>{assets}</head>"
            f"<body><h1>A vs B</h1><p>{h.escape(s['a']['file'])} (A) · {h.escape(s['b']['file'])} (B) · "
            f"{s['size']}</p><div class='zoom-root inspect-stage'>"
            f"{pair_view.pair_html(a, b, ('A', 'B'))}{pair_view.flicker_html(a, b, labels=('A', 'B'))}</div>"
            f"{pair_view.visibility_html(result['visibility'])}"
            f"<p class='lpips-how'>{h.escape(result['lpips_how'])}"
            f"{'; ' + h.escape(result['alpha']) if result['alpha'] else ''}.</p>"
            f"<table class='metrics'>{rows}</table>"
            + pair_view.maps_panel(m, gain)
            + f"<h2>What the files say about themselves</h2>{meta}</body></html>")


def write_outputs(out, result, assets, gain=GAIN):
    """A.png and B.png as compared, the four maps, inspect.json and inspect.html in `out`; each file whole or not
    at all. Returns the paths."""
    from PIL import Image
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = {"A.png": result["a"].image(), "B.png": result["b"].image(),
              **{f"{k}.png": Image.fromarray(v) for k, v in maps(result, gain).items()}}
    texts = {"inspect.json": json.dumps(summary(result), indent=1, default=float),
             "inspect.html": page_html(result, assets, gain)}
    paths = [out / n for n in [*images, *texts]]
    with replacing(*paths) as temps:
        for tmp, (name, img) in zip(temps, images.items()):
            img.save(tmp, format="PNG")
        for tmp, text in zip(temps[len(images):], texts.values()):
            tmp.write_text(text)
    return paths
