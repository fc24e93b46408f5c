"""Seeded noise samplers keyed on the sigma interval, not on call order (a virtual Brownian tree)."""
import math

import numpy as np
import torch

_MASK = (1 << 64) - 1


def _mix(a, b):
    """splitmix64 of two integers: a child seed that depends only on its parent and its branch."""
    z = (a * 0x9E3779B97F4A7C15 + b + 0x632BE59BD9B4E019) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def _signed(c):
    return c - (1 << 64) if c >= 1 << 63 else c


_C = [_signed(c) for c in (0x9E3779B97F4A7C15, 0x632BE59BD9B4E019, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)]


def _shr(z, k):
    """Logical right shift of int64 tensors (>> is arithmetic on signed integers)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix(a, b):
    """`_mix` on int64 tensors, element-wise: multiplications wrap modulo 2**64 as in splitmix64."""
    z = a * _C[0] + b + _C[1]
    z = (z ^ _shr(z, 30)) * _C[2]
    z = (z ^ _shr(z, 27)) * _C[3]
    return (z ^ _shr(z, 31)) & ((1 << 63) - 1)


def counter_normal(nodes, n):
    """(len(nodes), n) standard normal draws, each a pure function of its node and index (Box-Muller)."""
    idx = torch.arange(n, device=nodes.device, dtype=torch.int64)[None]
    h = mix(nodes[:, None], idx)
    # One 63-bit hash gives both uniforms: 31 bits each, in (0, 1) (tails to 6.5 standard deviations).
    u1 = (_shr(h, 32).double() + 0.5) * 2.0 ** -31
    u2 = ((h & 0x7FFFFFFF).double() + 0.5) * 2.0 ** -31
    return (-2 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)


class BrownianNoiseSampler:
    """Brownian motion W over sigma in [0, sigma_max], one path per batch item and seed.

    `noise_sampler(sigma, sigma_next)` returns (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|),
    a standard normal draw that depends only on the interval and the seed (Li et al. 2020's virtual
    Brownian tree): two schedules with the same seed see the same noise where they meet, and nearly
    the same noise where they nearly meet, so a paired comparison isolates the schedule. Every item
    descends its own tree at once (tensor ops on the batch's device, no loop over items): each
    bisection midpoint is a Brownian-bridge draw from a counter-based generator keyed by the node.
    """

    def __init__(self, x, seed, sigma_max, depth=24):
        seeds = [seed] * x.shape[0] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != x.shape[0]:
            raise ValueError(f"need one seed per batch item: got {len(seeds)} seeds for batch {x.shape[0]}")
        if not (math.isfinite(sigma_max) and sigma_max > 0):
            raise ValueError(f"sigma_max must be a positive number (got {sigma_max})")
        if any(not 0 <= s < 1 << 63 for s in seeds):
            raise ValueError("seeds must be whole numbers from 0 to 2**63 - 1")
        self.seeds = seeds
        self.shape, self.dtype, self.device = tuple(x.shape[1:]), x.dtype, x.device
        self.sigma_max = float(sigma_max)
        self.depth = depth
        self._roots = mix(torch.tensor(seeds, dtype=torch.int64, device=self.device), 0)
        self._size = math.prod(self.shape)
        self._cache = {}

    def _w(self, t):
        """W(t) of every item, t a float64 (B,) numpy array of host values, by bisection from each item's tree root."""
        key = t.tobytes()
        if key in self._cache:
            return self._cache[key]
        # From host memory the copy is queued without waiting for the device (no sync in a sampler's loop).
        t = torch.from_numpy(t).to(self.device, non_blocking=True)
        n = len(self.seeds)
        a = torch.zeros(n, dtype=torch.float64, device=self.device)
        b = torch.full_like(a, self.sigma_max)
        node = self._roots
        w_a = torch.zeros(n, self._size, dtype=torch.float64, device=self.device)
        w_b = math.sqrt(self.sigma_max) * counter_normal(node, self._size)
        for _ in range(self.depth):
            m = (a + b) / 2
            w_m = (w_a + w_b) / 2 + ((b - a) / 4).sqrt()[:, None] * counter_normal(mix(node, 3), self._size)
            left = t < m
            b, a = torch.where(left, m, b), torch.where(left, a, m)
            w_b, w_a = torch.where(left[:, None], w_m, w_b), torch.where(left[:, None], w_a, w_m)
            node = mix(node, torch.where(left, 1, 2))
        # Below the leaf width (sigma_max / 2**depth) the bridge mean is used.
        w = w_a + (w_b - w_a) * ((t - a) / (b - a))[:, None]
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = w
        return w

    def _host(self, sigma):
        """sigma as float64 host values, one per item. The samplers pass host copies of their schedule tables;
        a device tensor is read back here, which waits for the device."""
        if isinstance(sigma, torch.Tensor):
            sigma = sigma.detach().cpu().double().numpy()
        return np.broadcast_to(np.asarray(sigma, dtype=np.float64).reshape(-1), (len(self.seeds),)).copy()

    def __call__(self, sigma, sigma_next):
        sigma, sigma_next = self._host(sigma), self._host(sigma_next)
        lo, hi = np.minimum(sigma, sigma_next), np.maximum(sigma, sigma_next)
        bad = (hi > self.sigma_max * (1 + 1e-6)) | (lo < 0) | ~np.isfinite(hi + lo)
        if bad.any():
            i = int(bad.nonzero()[0][0])
            raise ValueError(f"noise asked for sigma interval ({float(sigma[i])}, {float(sigma_next[i])}) outside "
                             f"[0, {self.sigma_max}]; build the noise sampler with a larger sigma_max")
        capped = lambda v: np.minimum(v, self.sigma_max)  # noqa: E731
        dw = self._w(capped(sigma_next)) - self._w(capped(sigma))
        length = torch.from_numpy(hi - lo).to(self.device, non_blocking=True)
        scale = torch.where(length > 0, length, torch.ones_like(length)).rsqrt()
        out = torch.where((length > 0)[:, None], dw * scale[:, None], torch.zeros_like(dw))
        return out.reshape(len(self.seeds), *self.shape).to(self.dtype)


def initial_noise(shape, seed, dtype=torch.float32, device="cpu"):
    """Initial N(0, I) noise of one item from its own seeded generator (so batches equal single runs)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)
