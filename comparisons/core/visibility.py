"""Is a pair's difference visible at all? One rule decides, for the app, the studies and the campaigns: NVIDIA's
FLIP (Andersson et al. 2020, "FLIP: A Difference Evaluator for Alternating Images") on the two images as the
app displays them. Also the difference images in absolute units and the FLIP map with its scale."""
import numpy as np

from ..errors import ConfigError
from .metrics import heatmap, to_array

# The rule. FLIP's own default viewing condition: 67 pixels per degree, a 0.7 m wide 3840-pixel monitor seen
# from 0.7 m. A pair is visibly different when some displayed pixel's FLIP error reaches FLIP_VISIBLE. The
# threshold sits between what a person can check (README, "When is a difference visible?"): any +-1/255 change
# of an embedded image scores at most 0.084 (+-2/255 noise 0.09-0.14, at the threshold), +-3/255 noise at least
# 0.17, one pixel off by 64/255 0.73, the blue-ring reproduction of sigma-min-vs-model (max |delta| 64/255)
# 0.65; identical images score 0.
FLIP_PPD = 67.0
FLIP_VISIBLE = 0.1
DISPLAY_MAX = 256       # CSS px of an image's longer side at zoom 1 in the app's views (static/viewer.js)
VISIBLE_LPIPS = 0.01    # LPIPS(A, B) under which the old rule called a pair invisible; shown for reference only
VISIBLE_DELTA = 3       # 8-bit steps; the visibility line reports the share of pixels differing by this much
LPIPS_MAP_MAX = 0.5     # fixed top of the LPIPS map's colour bar, so maps of different pairs compare
GAINS = (1, 2, 4, 8, 16, 32, 64)
_RULE = ("Visible when FLIP (NVIDIA's difference evaluator for alternating images) reaches {threshold:g} at some "
         "pixel of the images {scale}, viewed at {ppd:g} pixels per degree")
# What display_scale does for images of any size, said whole (the rule when no size is at hand).
ANY_SIZE = (f"as shown (up to {DISPLAY_MAX // 2} px: upscaled by the whole factor that brings the longer side nearest "
            f"{DISPLAY_MAX} px; larger: at native size, as at zoom 1:1)")
RULE = _RULE.format(threshold=FLIP_VISIBLE, ppd=FLIP_PPD, scale=ANY_SIZE)


def display_scale(height, width):
    """The whole-number factor the app upscales an image by (nearest neighbour) to show it."""
    return max(1, DISPLAY_MAX // max(height, width))


def shown_as(height, width):
    """How images of this size are measured: 'shown at 256 px (upscaled ×4 from 64 px)', or at native size (an image
    larger than DISPLAY_MAX px is fitted to the views until zoomed; FLIP measures it as at zoom 1:1)."""
    k, side = display_scale(height, width), max(height, width)
    if k > 1:
        return f"shown at {side * k} px (upscaled ×{k} from {side} px)"
    if side > DISPLAY_MAX:
        return f"at native size, {side} px (as at zoom 1:1; the views fit them to {DISPLAY_MAX} px until zoomed)"
    return f"shown at native size, {side} px"


def rule(height=None, width=None, threshold=FLIP_VISIBLE):
    """The rule in words, with the display scale of images of this size (of any size when none is given)."""
    scale = ANY_SIZE if height is None else shown_as(height, width)
    return _RULE.format(threshold=threshold, ppd=FLIP_PPD, scale=scale)


def flip_map(left, right, ppd=FLIP_PPD):
    """FLIP error per displayed pixel, float32 (H*k, W*k) in [0, 1], of the two images as the app shows them."""
    import flip_evaluator

    a, b = same_size(left, right)
    k = display_scale(*a.shape[:2])
    if np.array_equal(a, b):
        return np.zeros((a.shape[0] * k, a.shape[1] * k), np.float32)
    shown = [np.repeat(np.repeat(x.astype(np.float32) / 255, k, 0), k, 1) for x in (a, b)]
    error, _, _ = flip_evaluator.evaluate(shown[0], shown[1], "LDR", applyMagma=False, computeMeanError=False,
                                          parameters={"ppd": float(ppd)})
    return np.asarray(error, np.float32).reshape(shown[0].shape[:2])


def same_size(left, right):
    """Both images as uint8 arrays, or ValueError when their sizes differ."""
    a, b = to_array(left), to_array(right)
    if a.shape != b.shape:
        raise ValueError(f"images must have equal sizes to be compared (got {a.shape[:2]} and {b.shape[:2]})")
    return a, b


def is_below(flip_max, threshold=FLIP_VISIBLE):
    """The one rule: below visibility when no displayed pixel's FLIP error reaches the threshold."""
    return flip_max < threshold


def abs_delta(left, right):
    """|left - right| per pixel and channel, int16 (H, W, 3)."""
    a, b = same_size(left, right)
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def visibility(left, right, lpips, flip=None, threshold=FLIP_VISIBLE):
    """The visibility line: FLIP's verdict (`below`), its figures, max |delta|, the share of pixels differing by
    VISIBLE_DELTA/255 or more, and LPIPS beside them. `flip` is the FLIP map if already computed, or a stored
    max FLIP error (a number)."""
    delta = abs_delta(left, right).max(-1)
    max_delta = int(delta.max())
    share = float((delta >= VISIBLE_DELTA).mean())
    if max_delta == 0:
        flip_max = flip_mean = 0.0
    elif flip is not None and np.ndim(flip) == 0:
        flip_max, flip_mean = float(flip), None  # a stored figure; the map itself was not kept
    else:
        fmap = flip_map(left, right) if flip is None else flip
        flip_max, flip_mean = float(fmap.max()), float(fmap.mean())
    below = is_below(flip_max, threshold)
    if max_delta == 0:
        sentence = "The two images are identical, pixel for pixel."
    elif below:
        sentence = (f"Below visibility: FLIP stays under {threshold:g} everywhere (at most {flip_max:.3f}; the images "
                    f"differ by at most {max_delta}/255); a viewer cannot tell them apart.")
    else:
        sentence = (f"Visible: FLIP reaches {flip_max:.3f} (threshold {threshold:g}); {share:.1%} of pixels differ "
                    f"by {VISIBLE_DELTA}/255 or more.")
    return {"max_abs_diff": max_delta, "visible_share": share, "lpips": float(lpips), "lpips_floor": VISIBLE_LPIPS,
            "flip_max": flip_max, "flip_mean": flip_mean, "flip_threshold": threshold, "ppd": FLIP_PPD,
            "below": bool(below), "sentence": sentence, "rule": rule(*delta.shape[:2], threshold)}


def check_gain(gain):
    try:
        gain = int(gain)
    except (TypeError, ValueError):
        raise ConfigError(f"gain must be one of {', '.join(map(str, GAINS))} (got {gain!r})") from None
    if gain not in GAINS:
        raise ConfigError(f"gain must be one of {', '.join(map(str, GAINS))} (got {gain})")
    return gain


def difference_heatmap(left, right, gain=1):
    """Largest channel |Δ| in absolute 8-bit units x gain on a fixed 0..255 colour scale (bar: 0..255/gain)."""
    delta = abs_delta(left, right).max(-1) * check_gain(gain)
    return heatmap(np.minimum(delta, 255), vmax=255.0)


def amplified_difference(left, right, gain=1):
    """|L - R| x gain per channel, clipped at 255: where and in which colour the images differ."""
    return np.minimum(abs_delta(left, right) * check_gain(gain), 255).astype(np.uint8)


def lpips_heatmap(spatial):
    """The LPIPS spatial map on a fixed 0..LPIPS_MAP_MAX scale (larger values saturate)."""
    return heatmap(np.asarray(spatial), vmax=LPIPS_MAP_MAX)


def flip_heatmap(fmap):
    """The FLIP map on its fixed 0..1 scale."""
    return heatmap(np.asarray(fmap), vmax=1.0)


def pair_maps(left, right, spatial, fmap, gain):
    """The four maps of a pair as uint8 RGB arrays: |Δ| heat map, amplified difference, LPIPS map, FLIP map."""
    return {"difference": difference_heatmap(left, right, gain), "amplified": amplified_difference(left, right, gain),
            "lpips-map": lpips_heatmap(spatial), "flip-map": flip_heatmap(fmap)}


def colour_ramp(steps=64):
    """The heat maps' colours from 0 to 1, for drawing colour bars."""
    return heatmap(np.linspace(0, 1, steps)[None], vmax=1.0)[0]
