"""Is a pair's difference visible at all? One rule decides, for the app, the studies and the campaigns: NVIDIA's
FLIP (Andersson et al. 2020, "FLIP: A Difference Evaluator for Alternating Images") on the two images as the
app displays them. Also the difference images in absolute units and the FLIP map with its scale."""
import math

import numpy as np

from ..errors import ConfigError
from .metrics import heatmap, separable_filter, to_array, toeplitz

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
    a, b = same_size(left, right)
    k = display_scale(*a.shape[:2])
    if np.array_equal(a, b):
        return np.zeros((a.shape[0] * k, a.shape[1] * k), np.float32)
    if k > 1:
        a, b = (np.repeat(np.repeat(x, k, 0), k, 1) for x in (a, b))
    return ldr_flip(a, b, ppd)


# LDR-FLIP (Andersson et al. 2020) on 8-bit sRGB images, in torch: the same algorithm and constants as NVIDIA's
# flip_evaluator (its `evaluate(..., "LDR")`, within 1e-4 per pixel: tests/test_image_speed.py), about 2x faster
# on a CPU. Each filter is separable, so every plane is filtered as block-Toeplitz matrix products (one GEMM per
# direction) instead of a depthwise convolution; the image goes through in strips of rows, so memory stays bounded.
_XYZ = np.array([[10135552 / 24577794, 8788810 / 24577794, 4435075 / 24577794],
                 [2613072 / 12288897, 8788810 / 12288897, 887015 / 12288897],
                 [1425312 / 73733382, 8788810 / 73733382, 70074185 / 73733382]])  # linear sRGB -> XYZ (D65)
_NXYZ = np.diag(1 / np.array([0.950428545, 1.0, 1.088900371])) @ _XYZ  # ... divided by the white point
_YCXCZ = np.array([[0, 1, 0], [500, -500, 0], [0, 200, -200]]) @ _NXYZ  # linear sRGB -> (Y/Yn, Cx, Cz)
_LINEAR = np.where(np.arange(256) / 255 > 0.04045, ((np.arange(256) / 255 + 0.055) / 1.055) ** 2.4,
                   np.arange(256) / 255 / 12.92).astype(np.float32)  # sRGB 8-bit -> linear
_CSF = ((1, 0.0047, 0, 1e-5), (1, 0.0053, 0, 1e-5), (34.1, 0.04, 13.5, 0.025))  # (a1, b1, a2, b2): A, RG, BY
_QC, _QF, _PC, _PT = 0.7, 0.5, 0.4, 0.95  # colour and feature exponents, error redistribution
_STRIP = 256  # rows per strip
_FLIP_FILTERS = {}


def _hunt_lab(lin):
    """Linear sRGB (3, ...) -> Hunt-adjusted L*a*b* as (L, a, b)."""
    t = torch_mix(_NXYZ, lin)
    d = 6 / 29
    t = t.clamp_min(0).pow(1 / 3).where(t > d ** 3, t * (1 / (3 * d * d)) + 4 / 29)
    lum = 116 * t[1] - 16
    return lum, 5 * lum * (t[0] - t[1]), 2 * lum * (t[1] - t[2])


def torch_mix(matrix, x):
    """A 3x3 matrix applied to the channels (first axis) of x."""
    import torch
    return torch.tensordot(torch.tensor(matrix, dtype=x.dtype), x, dims=([1], [0]))


def _flip_filters(ppd):
    """(radius, CSF weights, cmax, filters across, filters down): the spatial (contrast sensitivity) and feature
    (edge, point) filters at `ppd` as block-Toeplitz matrices (core.metrics.toeplitz), one per plane."""
    import torch
    if ppd in _FLIP_FILTERS:
        return _FLIP_FILTERS[ppd]
    r = math.ceil(3 * math.sqrt(max(max(c[1], c[3]) for c in _CSF) / (2 * math.pi ** 2)) * ppd)
    x = np.arange(-r, r + 1) / ppd
    gauss, weights = [], []
    for a1, b1, a2, b2 in _CSF:  # sum of two Gaussians each, normalised over the 2-D window
        g1, g2 = np.exp(-np.pi ** 2 * x ** 2 / b1), np.exp(-np.pi ** 2 * x ** 2 / b2)
        w1, w2 = a1 * math.sqrt(math.pi / b1), a2 * math.sqrt(math.pi / b2)
        total = w1 * g1.sum() ** 2 + w2 * g2.sum() ** 2
        gauss.append((g1, g2))
        weights.append((w1 / total, w2 / total))
    sd = 0.5 * 0.082 * ppd
    rf = math.ceil(3 * sd)
    if rf > r:
        raise ValueError(f"ppd {ppd} is outside what this FLIP supports")
    xs = np.arange(-rf, rf + 1, dtype=np.float64)
    g = np.exp(-xs ** 2 / (2 * sd * sd))

    def signed(k):  # positive weights sum to 1, negative to -1; zero-padded to the spatial filters' width
        return np.pad(np.where(k < 0, k / -k[k < 0].sum(), k / k[k > 0].sum()), r - rf)
    edge, point, smooth = signed(-xs * g), signed((xs ** 2 / (sd * sd) - 1) * g), np.pad(g / g.sum(), r - rf)
    # planes: Y, Cx, Cz, Cz (BY is two Gaussians), then Y four times for edge x, edge y, point x, point y
    across = np.stack([gauss[0][0], gauss[1][0], gauss[2][0], gauss[2][1], edge, smooth, point, smooth])
    down = np.stack([gauss[0][0], gauss[1][0], gauss[2][0], gauss[2][1], smooth, edge, smooth, point])

    lum, a, b = _hunt_lab(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))  # green, blue
    cmax = float(((lum[0] - lum[1]).abs() + torch.hypot(a[0] - a[1], b[0] - b[1])) ** _QC)
    _FLIP_FILTERS[ppd] = (r, weights, cmax, toeplitz(across, torch.float32), toeplitz(down, torch.float32))
    return _FLIP_FILTERS[ppd]


def ldr_flip(a, b, ppd=FLIP_PPD):
    """LDR-FLIP error map of two uint8 sRGB images (H, W, 3) of one size at `ppd` pixels per degree: float32 (H, W)
    in [0, 1]."""
    import torch
    r, weights, cmax, across, down = _flip_filters(float(ppd))
    h, w = a.shape[:2]
    padded = np.pad(np.stack([a, b]), ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")  # the border replicated
    out = np.empty((h, w), np.float32)
    pcc = _PC * cmax
    with torch.no_grad():
        for top in range(0, h, _STRIP):
            rows = min(_STRIP, h - top)
            opp = torch.from_numpy(_LINEAR[padded[:, top:top + rows + 2 * r]] @ _YCXCZ.T.astype(np.float32))
            opp = opp.permute(3, 0, 1, 2)  # (Y/Yn, Cx, Cz) x (A, B) x rows x columns
            f = separable_filter(torch.cat((opp, opp[2:3], opp[0:1].expand(4, -1, -1, -1))), across, down)
            y = f[0] * weights[0][0]
            cx = f[1] * (weights[1][0] / 500)
            cz = (f[2] * weights[2][0] + f[3] * weights[2][1]) / 200
            linear = torch_mix(np.linalg.inv(_NXYZ), torch.stack((y + cx, y, y - cz))).clamp_(0, 1)
            lum, ca, cb = _hunt_lab(linear)
            hyab = ((lum[0] - lum[1]).abs_() + torch.hypot(ca[0] - ca[1], cb[0] - cb[1])).pow_(_QC)
            colour = torch.where(hyab < pcc, hyab * (_PT / pcc), _PT + (hyab - pcc) * ((1 - _PT) / (cmax - pcc)))
            edges, points = torch.hypot(f[4], f[5]), torch.hypot(f[6], f[7])
            feature = torch.maximum((edges[0] - edges[1]).abs_(), (points[0] - points[1]).abs_())
            feature = (feature * (1 / math.sqrt(2))).pow_(_QF)
            out[top:top + rows] = colour.pow_(1 - feature).numpy()
    return out


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
