"""Is a pair's difference visible at all? The visibility line, and difference images in absolute units."""
import numpy as np

from ..errors import ConfigError
from .metrics import heatmap, to_array

VISIBLE_LPIPS = 0.01    # below this LPIPS(A, B) a pair reads as identical (the studies' visibility threshold)
VISIBLE_DELTA = 3       # 8-bit steps; a difference of 1-2/255 is under what a screen shows a viewer
LPIPS_MAP_MAX = 0.5     # fixed top of the LPIPS map's colour bar, so maps of different pairs compare
GAINS = (1, 2, 4, 8, 16, 32, 64)


def abs_delta(left, right):
    """|left - right| per pixel and channel, int16 (H, W, 3)."""
    a, b = to_array(left).astype(np.int16), to_array(right).astype(np.int16)
    if a.shape != b.shape:
        raise ValueError(f"images must have equal sizes to be compared (got {a.shape[:2]} and {b.shape[:2]})")
    return np.abs(a - b)


def visibility(left, right, lpips):
    """max |Δ|, the share of pixels differing by >= VISIBLE_DELTA/255, LPIPS against VISIBLE_LPIPS, and a verdict.

    Below visibility: no pixel differs by VISIBLE_DELTA or more, or LPIPS(A, B) is under VISIBLE_LPIPS.
    """
    delta = abs_delta(left, right).max(-1)
    max_delta = int(delta.max())
    share = float((delta >= VISIBLE_DELTA).mean())
    below = max_delta < VISIBLE_DELTA or lpips < VISIBLE_LPIPS
    if max_delta == 0:
        sentence = "The two images are identical, pixel for pixel."
    elif below:
        sentence = (f"Below visibility: the images differ by at most {max_delta}/255"
                    + (f" and LPIPS is under {VISIBLE_LPIPS}" if lpips < VISIBLE_LPIPS else "")
                    + "; a viewer cannot tell them apart.")
    else:
        sentence = f"Visible: {share:.1%} of pixels differ by {VISIBLE_DELTA}/255 or more."
    return {"max_abs_diff": max_delta, "visible_share": share, "lpips": float(lpips),
            "lpips_floor": VISIBLE_LPIPS, "below": bool(below), "sentence": sentence}


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


def colour_ramp(steps=64):
    """The heat maps' colours from 0 to 1, for drawing colour bars."""
    return heatmap(np.linspace(0, 1, steps)[None], vmax=1.0)[0]
