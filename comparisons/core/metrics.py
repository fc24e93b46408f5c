"""Distances between the two images of a pair, computed from the 8-bit images exactly as stored."""
import math
import threading
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .lpips_weights import load_trunk

LPIPS_MIN_SIZE = 64  # LPIPS was trained on 64x64 patches
# torchvision AlexNet.features index -> lpips' slice holding it
_SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def to_array(image):
    """PIL image or array -> uint8 (H, W, 3)."""
    arr = np.array(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError("images must be 8-bit RGB")
    return arr


def _check_pair(a, b):
    if a.shape != b.shape:
        raise ValueError(f"images must have equal sizes to be compared (got {a.shape[:2]} and {b.shape[:2]})")


def lpips_input(arr):
    """uint8 (H, W, 3) -> (1, 3, H', W') in [-1, 1], nearest-upscaled to at least 64x64."""
    x = torch.from_numpy(arr.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    if h < LPIPS_MIN_SIZE or w < LPIPS_MIN_SIZE:
        x = F.interpolate(x, size=(max(h, LPIPS_MIN_SIZE), max(w, LPIPS_MIN_SIZE)), mode="nearest")
    return x


BLOCK = 64  # outputs per block of a block-Toeplitz filter


def toeplitz(kernels, dtype):
    """1-D kernels (C, 2r + 1) as block-Toeplitz matrices (C, BLOCK + 2r, BLOCK): BLOCK correlated outputs from
    BLOCK + 2r inputs, one matrix product (a GEMM) where a depthwise convolution is several times slower on a CPU."""
    kernels = np.asarray(kernels, np.float64)
    t = np.zeros((len(kernels), BLOCK + kernels.shape[1] - 1, BLOCK))
    for j in range(BLOCK):
        t[:, j:j + kernels.shape[1], j] = kernels
    return torch.from_numpy(t).to(dtype)


def separable_filter(x, across, down):
    """Each plane of x (C, N, h + 2r, w + 2r) correlated with its own separable filter (toeplitz() matrices of its
    kernel along the rows, `across`, and down the columns, `down`), over valid windows only: (C, N, h, w)."""
    c, n = x.shape[:2]
    span = across.shape[1]
    h, w = x.shape[2] - span + BLOCK, x.shape[3] - span + BLOCK
    nh, nw = -(-h // BLOCK), -(-w // BLOCK)
    x = F.pad(x, (0, nw * BLOCK + span - BLOCK - x.shape[3], 0, nh * BLOCK + span - BLOCK - x.shape[2]))
    hp, wp = x.shape[2:]
    blocks = x.as_strided((c, n, hp, nw, span), (n * hp * wp, hp * wp, wp, BLOCK, 1))
    y = torch.bmm(blocks.reshape(c, n * hp * nw, span), across.expand(c, -1, -1)).view(c, n, hp, nw * BLOCK)
    wo = nw * BLOCK
    blocks = y.as_strided((c, n, nh, span, wo), (n * hp * wo, hp * wo, BLOCK * wo, wo, 1))
    out = torch.matmul(down.transpose(1, 2).expand(c, -1, -1)[:, None], blocks.reshape(c, n * nh, span, wo))
    return out.view(c, n, nh * BLOCK, wo)[:, :, :h, :w]


def unit_images(images):
    """[-1, 1] float images (B, 3, H, W) -> (B, H, W, 3) in [0, 1], clamped as the 8-bit image is."""
    return ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


def rmse(a, b):
    """Root mean square difference of two float images in [0, 1] (before 8-bit rounding)."""
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


class LPIPS:
    """LPIPS v0.1 over the ImageNet AlexNet trunk (Zhang et al. 2018); never a random trunk."""

    def __init__(self, weights=None):
        import lpips

        trunk = load_trunk(weights)
        with warnings.catch_warnings():  # torchvision's notes on lpips' use of `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            # pnet_rand=True only skips torchvision's download; the real trunk is loaded right below.
            self.net = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, spatial=True,
                                   verbose=False).eval()
        self.net.net.load_state_dict({f"slice{_SLICE_OF[i]}.{i}.{p}": trunk[f"{i}.{p}"]
                                      for i in _SLICE_OF for p in ("weight", "bias")})
        self._lock = threading.Lock()  # one forward at a time: torch modules are not re-entrant-safe

    @torch.no_grad()
    def __call__(self, image_a, image_b):
        """(distance, spatial map (H', W') as float32 numpy)."""
        a, b = to_array(image_a), to_array(image_b)
        _check_pair(a, b)
        with self._lock:
            spatial = self.net(lpips_input(a), lpips_input(b))[0, 0]
        return float(spatial.mean()), spatial.numpy()

    @torch.no_grad()
    def batch(self, images_a, images_b, chunk=256):
        """LPIPS distances of many equal-size pairs (8-bit arrays or PIL images), `chunk` pairs a forward."""
        out = []
        for i in range(0, len(images_a), chunk):
            a = [to_array(x) for x in images_a[i:i + chunk]]
            b = [to_array(x) for x in images_b[i:i + chunk]]
            for x, y in zip(a, b):
                _check_pair(x, y)
            with self._lock:
                spatial = self.net(torch.cat([lpips_input(x) for x in a]), torch.cat([lpips_input(y) for y in b]))
            out += spatial.mean((1, 2, 3)).tolist()
        return out


def psnr(a, b):
    """Peak signal-to-noise ratio in dB for 8-bit images; inf for identical images."""
    a, b = to_array(a).astype(np.float64), to_array(b).astype(np.float64)
    _check_pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ssim(a, b):
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, mean over RGB (channel by
    channel, so a 1024² pair holds a third of the float64 planes at a time)."""
    from scipy.ndimage import correlate1d

    a, b = to_array(a), to_array(b)
    _check_pair(a, b)
    size = min(11, a.shape[0], a.shape[1])
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-coords ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    lo, hi = size // 2, size - 1 - size // 2

    def blur(t):
        """Separable Gaussian over valid windows only, as Wang et al. (in float64: 6x torch's conv2d on a CPU)."""
        t = correlate1d(correlate1d(t, g, axis=0, mode="constant"), g, axis=1, mode="constant")
        return t[lo:t.shape[0] - hi, lo:t.shape[1] - hi]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    means = []
    for channel in range(3):
        x, y = (arr[..., channel].astype(np.float64) for arr in (a, b))
        mu_x, mu_y = blur(x), blur(y)
        var_x, var_y = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2
        cov = blur(x * y) - mu_x * mu_y
        s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
        means.append(s.mean())
    return float(np.mean(means))


def max_abs_diff(a, b):
    """Largest absolute difference of any channel of any pixel (0..255)."""
    a, b = to_array(a), to_array(b)
    _check_pair(a, b)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# A perceptually ordered dark-to-bright ramp (close to matplotlib's 'inferno').
_RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)


def heatmap(values, vmax=None):
    """2-D non-negative values -> uint8 RGB heat map, 0 black, vmax (default: the max) bright."""
    values = np.asarray(values, dtype=np.float64)
    vmax = float(values.max()) if vmax is None else vmax
    t = np.clip(values / vmax, 0, 1) if vmax > 0 else np.zeros_like(values)
    pos = t * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).round().astype(np.uint8)


def pixel_metrics(image_a, image_b):
    """The pair's pixel distances: PSNR, SSIM, max |Δ|."""
    return {"psnr": psnr(image_a, image_b), "ssim": ssim(image_a, image_b),
            "max_abs_diff": max_abs_diff(image_a, image_b)}


def pair_metrics(lpips_metric, image_a, image_b):
    """All distances of a pair, plus the LPIPS spatial map (float32, for core.visibility to draw)."""
    distance, spatial = lpips_metric(image_a, image_b)
    return {"lpips": distance, **pixel_metrics(image_a, image_b)}, {"lpips_spatial": spatial}
