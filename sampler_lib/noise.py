"""Seeded noise samplers keyed on the sigma interval, not on call order (a virtual Brownian tree)."""
import math

import torch

_MASK = (1 << 64) - 1


def _mix(a, b):
    """splitmix64 of two integers: a child seed that depends only on its parent and its branch."""
    z = (a * 0x9E3779B97F4A7C15 + b + 0x632BE59BD9B4E019) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class BrownianNoiseSampler:
    """Brownian motion W over sigma in [0, sigma_max], one path per batch item and seed.

    `noise_sampler(sigma, sigma_next)` returns (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|),
    a standard normal draw that depends only on the interval and the seed (Li et al. 2020's virtual
    Brownian tree): two schedules with the same seed see the same noise where they meet, and nearly
    the same noise where they nearly meet, so a paired comparison isolates the schedule.
    """

    def __init__(self, x, seed, sigma_max, depth=24):
        seeds = [seed] * x.shape[0] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != x.shape[0]:
            raise ValueError(f"need one seed per batch item: got {len(seeds)} seeds for batch {x.shape[0]}")
        if not (math.isfinite(sigma_max) and sigma_max > 0):
            raise ValueError(f"sigma_max must be a positive number (got {sigma_max})")
        self.seeds = seeds
        self.shape, self.dtype, self.device = tuple(x.shape[1:]), x.dtype, x.device
        self.sigma_max = float(sigma_max)
        self.depth = depth
        self._cache = {}

    def _normal(self, node):
        gen = torch.Generator().manual_seed(node)
        return torch.randn(self.shape, generator=gen, dtype=torch.float64)

    def _w(self, seed, t):
        """W(t) by bisection: each midpoint is a Brownian-bridge draw seeded by its path from the root."""
        key = (seed, t)
        if key in self._cache:
            return self._cache[key]
        a, b = 0.0, self.sigma_max
        node = _mix(seed, 0)
        w_a, w_b = torch.zeros(self.shape, dtype=torch.float64), math.sqrt(b) * self._normal(node)
        for _ in range(self.depth):
            m = (a + b) / 2
            w_m = (w_a + w_b) / 2 + math.sqrt((b - a) / 4) * self._normal(_mix(node, 3))
            if t < m:
                b, w_b, node = m, w_m, _mix(node, 1)
            else:
                a, w_a, node = m, w_m, _mix(node, 2)
        # Below the leaf width (sigma_max / 2**depth) the bridge mean is used.
        w = w_a + (w_b - w_a) * ((t - a) / (b - a))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = w
        return w

    def __call__(self, sigma, sigma_next):
        sigma = torch.as_tensor(sigma).flatten().double().expand(len(self.seeds))
        sigma_next = torch.as_tensor(sigma_next).flatten().double().expand(len(self.seeds))
        out = []
        for seed, s, s_next in zip(self.seeds, sigma.tolist(), sigma_next.tolist()):
            if max(s, s_next) > self.sigma_max * (1 + 1e-6) or min(s, s_next) < 0:
                raise ValueError(f"noise asked for sigma interval ({s}, {s_next}) outside [0, "
                                 f"{self.sigma_max}]; build the noise sampler with a larger sigma_max")
            length = abs(s_next - s)
            if length == 0:
                out.append(torch.zeros(self.shape, dtype=torch.float64))
                continue
            s, s_next = min(s, self.sigma_max), min(s_next, self.sigma_max)
            out.append((self._w(seed, s_next) - self._w(seed, s)) / math.sqrt(length))
        return torch.stack(out).to(self.dtype).to(self.device)


def initial_noise(shape, seed, dtype=torch.float32, device="cpu"):
    """Initial N(0, I) noise of one item from its own seeded generator (so batches equal single runs)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)
