"""Procedural training data for the embedded model: one saturated shape on a grey background.

Everything is rendered with torch from an explicit generator, so a seed fully determines a batch.
`classify` is the colour and shape check the tests and the model card use.
"""
import colorsys
import math
from dataclasses import asdict, dataclass

import torch

COLORS = {
    "red": (220, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (235, 215, 30),
    "green": (40, 180, 60),
    "cyan": (30, 200, 210),
    "blue": (40, 80, 220),
    "purple": (130, 50, 200),
    "magenta": (220, 50, 180),
}
SHAPES = ["circle", "square", "triangle", "ring"]


@dataclass(frozen=True)
class DataConfig:
    size: int = 32                # image side in pixels
    radius: tuple = (0.20, 0.34)  # object circumradius, as a fraction of the side
    margin: float = 0.36          # object centre stays within [margin, 1 - margin] of the side
    grey: tuple = (0.2, 0.8)      # background base grey level
    gradient: float = 0.25        # largest background gradient amplitude
    texture: float = 0.06         # amplitude of the smooth background texture
    shading: tuple = (0.7, 1.1)   # object brightness varies across it within this range

    def to_dict(self):
        return asdict(self)


def label_of(color, shape):
    """Class index of a (colour, shape) pair; len(COLORS) * len(SHAPES) is the unconditional label."""
    return list(COLORS).index(color) * len(SHAPES) + SHAPES.index(shape)


NUM_CLASSES = len(COLORS) * len(SHAPES)


def _uniform(gen, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _shape_sdf(shape_idx, px, py, r):
    """Signed distance (in pixels, negative inside) of each shape with circumradius r."""
    circle = torch.sqrt(px ** 2 + py ** 2) - r
    square = torch.maximum(px.abs(), py.abs()) - r / math.sqrt(2)
    edges = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3,
                                                   math.pi / 2 + 4 * math.pi / 3)]
    triangle = torch.stack([nx * px + ny * py for nx, ny in edges]).amax(0) - r / 2
    ring = (torch.sqrt(px ** 2 + py ** 2) - 0.68 * r).abs() - 0.32 * r
    stack = torch.stack([circle, square, triangle, ring])  # order of SHAPES
    return stack.gather(0, shape_idx[None, :, None, None].expand(1, *px.shape)).squeeze(0)


def render(labels, gen, cfg=DataConfig()):
    """Images in [0, 1], shape (B, 3, size, size), for class labels (colour * len(SHAPES) + shape)."""
    labels = torch.as_tensor(labels)
    n, s = len(labels), cfg.size
    color_idx, shape_idx = labels // len(SHAPES), labels % len(SHAPES)
    coords = torch.arange(s, dtype=torch.float32) + 0.5
    yy, xx = coords[None, :, None], coords[None, None, :]

    # Background: a grey level, a linear gradient and smooth texture, identical in R, G and B.
    grey = _uniform(gen, n, *cfg.grey)[:, None, None]
    angle = _uniform(gen, n, 0, 2 * math.pi)[:, None, None]
    amp = _uniform(gen, n, 0, cfg.gradient)[:, None, None]
    ramp = ((xx - s / 2) * torch.cos(angle) + (yy - s / 2) * torch.sin(angle)) / s
    texture = torch.nn.functional.interpolate(torch.randn(n, 1, 6, 6, generator=gen), size=(s, s),
                                              mode="bicubic", align_corners=False)[:, 0]
    bg = (grey + amp * ramp + cfg.texture * texture).clamp(0.05, 0.95)

    # Object: position, size and rotation, anti-aliased over one pixel.
    cx = _uniform(gen, n, cfg.margin, 1 - cfg.margin)[:, None, None] * s
    cy = _uniform(gen, n, cfg.margin, 1 - cfg.margin)[:, None, None] * s
    r = _uniform(gen, n, *cfg.radius)[:, None, None] * s
    rot = _uniform(gen, n, 0, 2 * math.pi)[:, None, None]
    dx, dy = xx - cx, yy - cy
    px = dx * torch.cos(rot) + dy * torch.sin(rot)
    py = -dx * torch.sin(rot) + dy * torch.cos(rot)
    mask = (0.5 - _shape_sdf(shape_idx, px, py, r)).clamp(0, 1)[:, None]

    shade_angle = _uniform(gen, n, 0, 2 * math.pi)[:, None, None]
    lo, hi = cfg.shading
    shade = lo + (hi - lo) * (0.5 + ((dx * torch.cos(shade_angle) + dy * torch.sin(shade_angle))
                                     / (2 * r)).clamp(-0.5, 0.5))
    palette = torch.tensor(list(COLORS.values()), dtype=torch.float32) / 255
    obj = (palette[color_idx][:, :, None, None] * shade[:, None]).clamp(0, 1)
    return bg[:, None] * (1 - mask) + obj * mask


_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in COLORS.items()}


def classify(image):
    """Dominant saturated colour and shape of a uint8 (H, W, 3) image or PIL image.

    Colour: pixels with HSV saturation > 0.45 and value > 0.25 vote for the palette colour of nearest
    hue; the most voted colour wins. Shape, from that colour's pixel mask: a ring has an empty centre;
    otherwise area / (pi * r_max^2), r_max the farthest mask pixel from the centroid, is about 0.79
    for a circle, 0.64 for a square and 0.41 for a triangle. Returns (colour, shape), None when absent.
    """
    img = torch.as_tensor(__import__("numpy").asarray(image, dtype="float32")) / 255
    mx, mn = img.amax(-1), img.amin(-1)
    sat = torch.where(mx > 0, (mx - mn) / mx.clamp_min(1e-6), torch.zeros_like(mx))
    saturated = (sat > 0.45) & (mx > 0.25)
    if int(saturated.sum()) < 4:
        return None, None
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    hue = _hue(r, g, b, mx, mn)
    names = list(_HUES)
    ref = torch.tensor([_HUES[c] for c in names])
    dist = (hue[..., None] - ref).abs()
    dist = torch.minimum(dist, 1 - dist)
    nearest = dist.argmin(-1)
    votes = torch.bincount(nearest[saturated], minlength=len(names))
    color = int(votes.argmax())
    mask = saturated & (nearest == color)
    return names[color], _shape_of(mask)


def _hue(r, g, b, mx, mn):
    delta = (mx - mn).clamp_min(1e-6)
    h = torch.where(mx == r, ((g - b) / delta) % 6, torch.where(mx == g, (b - r) / delta + 2,
                                                                 (r - g) / delta + 4))
    return h / 6


def _shape_of(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    ys, xs = ys.float() + 0.5, xs.float() + 0.5
    area = float(len(xs))
    cy, cx = ys.mean(), xs.mean()
    dist = torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    r_max = float(dist.max()) + 0.5
    if float((dist < 0.3 * r_max).sum()) < 0.25 * math.pi * (0.3 * r_max) ** 2:
        return "ring"
    ratio = area / (math.pi * r_max ** 2)
    if ratio > 0.71:
        return "circle"
    if ratio > 0.52:
        return "square"
    return "triangle"
