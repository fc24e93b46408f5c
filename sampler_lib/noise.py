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


_M63 = (1 << 63) - 1
_MANT = 0x000FFFFFFFE00000  # mantissa bits 21..51: where a 31-bit integer k goes as (2k + 1) * 2**-32
_ONE_HALF = 0x3FF0000000100000  # 1.0 with mantissa bit 20 set: the + 0.5 of (k + 0.5) * 2**-31


def _mix_host(a, b):
    """`_mix` on uint64 numpy arrays (wrapping arithmetic), element-wise."""
    u = np.uint64
    z = a * u(0x9E3779B97F4A7C15) + b + u(0x632BE59BD9B4E019)
    z = (z ^ (z >> u(30))) * u(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> u(27))) * u(0x94D049BB133111EB)
    return (z ^ (z >> u(31))) & u(_M63)


class _Draws:
    """counter_normal's draws, computed into two reused buffers: the same operations on the same (B, n) layout, so
    the same bits. `keys` are the nodes' `node * C0 + C1` (mix's first step); `highs`, when given, is `keys >>> 30`,
    which equals `(keys + i) >>> 30` for every index i of the row when no carry leaves the low 30 bits (the caller
    checks), so splitmix64's first xor-shift is one xor with it."""

    def __init__(self, batch, n, device):
        self.idx = torch.arange(n, device=device, dtype=torch.int64)[None]
        self.z = torch.empty(batch, n, dtype=torch.int64, device=device)
        self.t = torch.empty_like(self.z)

    def __call__(self, keys, highs=None):
        z, t = self.z, self.t
        torch.add(self.idx, keys[:, None], out=z)
        if highs is None:
            torch.bitwise_right_shift(z, 30, out=t)
            z.bitwise_xor_(t.bitwise_and_((1 << 34) - 1))
        else:
            z.bitwise_xor_(highs[:, None])
        z.mul_(_C[2])
        torch.bitwise_right_shift(z, 27, out=t)
        z.bitwise_xor_(t.bitwise_and_((1 << 37) - 1)).mul_(_C[3])
        torch.bitwise_right_shift(z, 31, out=t)
        z.bitwise_xor_(t.bitwise_and_((1 << 33) - 1))  # counter_normal's h, but for its top bit (masked below)
        # u = (k + 0.5) * 2**-31 for a 31-bit k, exactly: the double 1 + u made from bits, minus 1 (exact).
        torch.bitwise_right_shift(z, 11, out=t)  # k of u1: bits 32..62 of h
        u1 = t.bitwise_and_(_MANT).bitwise_or_(_ONE_HALF).view(torch.float64).sub_(1.0)
        u2 = z.bitwise_left_shift_(21).bitwise_and_(_MANT).bitwise_or_(_ONE_HALF).view(torch.float64).sub_(1.0)
        u2.mul_(2 * math.pi).cos_()
        return u1.log_().mul_(-2).sqrt_().mul_(u2)  # in a buffer that the next call overwrites


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
        self._roots_host = _mix_host(np.array(seeds, dtype=np.uint64), np.uint64(0))
        self._size = math.prod(self.shape)
        self._cache = {}
        self._bank = self._left = None  # the last path's top levels (see _w), made on the first draw

    # The first levels of the last path are kept: consecutive sigmas of a schedule share their top few levels (a
    # 25-step Karras schedule: 5.7 of 24 on average, up to 11), and the next W descends only from where they part.
    PREFIX = 12

    def _plan(self, t):
        """Every item's path to t on the host, in float64 as the device would compute it: at each level the side
        taken, the Brownian bridge's scale and the counter key of the midpoint's draw; then the leaf fraction."""
        n, depth, u = len(self.seeds), self.depth, np.uint64
        a, b = np.zeros(n), np.full(n, self.sigma_max)
        node = self._roots_host
        keys, scales, left = np.empty((depth, n), u), np.empty((depth, n)), np.empty((depth, n), bool)
        for level in range(depth):
            m = (a + b) / 2
            scales[level] = np.sqrt((b - a) / 4)
            keys[level] = _mix_host(node, u(3)) * u(0x9E3779B97F4A7C15) + u(0x632BE59BD9B4E019)
            left[level] = go_left = t < m
            b, a = np.where(go_left, m, b), np.where(go_left, a, m)
            node = _mix_host(node, np.where(go_left, u(1), u(2)))
        return keys, scales, left, (t - a) / (b - a)

    def _w(self, t):
        """W(t) of every item, t a float64 (B,) numpy array of host values, by bisection from each item's tree root.

        At each level the midpoint is drawn from the Brownian bridge between the item's two ends so far and
        replaces one of them. The ends are whole tensors when every item takes the same side at every level (one
        schedule for the batch), else rows of `ends` (w_a rows, then w_b rows). Levels above PREFIX are kept in
        `bank` (slot 0: W(0) = 0, 1: W(sigma_max), 2 + l: level l's midpoints) for the next W to start from."""
        key = t.tobytes()
        if key in self._cache:
            return self._cache[key]
        n, size, dev, depth = len(self.seeds), self._size, self.device, self.depth
        keys, scales, left, frac = self._plan(t)
        kept = min(self.PREFIX, depth)
        if self._bank is None:
            self._bank = torch.empty(kept + 2, n, size, dtype=torch.float64, device=dev)
            self._draws = _Draws(n, size, dev)
            root = mix(torch.tensor(self.seeds, dtype=torch.int64, device=dev), 0)
            self._bank[0].zero_()
            torch.mul(counter_normal(root, size), math.sqrt(self.sigma_max), out=self._bank[1])
            start = 0
        else:  # the levels up to the first where some item's path leaves the last one's (whose midpoint they share)
            differs = (left != self._left).any(axis=1)
            start = min(int(differs.argmax()) + 1 if differs.any() else depth, kept)
        self._left = left
        # Before level `start`, an item's ends are the last midpoint it went right of (or W(0)) and the last it
        # went left of (or W(sigma_max)).
        levels = np.arange(start)[:, None] + 2
        lo = np.where(left[:start], 0, levels).max(axis=0, initial=0)
        hi = np.where(left[:start], levels, 1).max(axis=0, initial=1)
        uniform = bool((left == left[:, :1]).all())
        # splitmix64's first xor-shift is one xor with keys >>> 30 where no row carries out of the low 30 bits.
        no_carry = ((keys & np.uint64((1 << 30) - 1)) + np.uint64(size - 1) < np.uint64(1 << 30)).all(axis=1)
        rows = np.arange(n)
        # One host-to-device copy per W: keys, keys >>> 30, the scales' and the fraction's bits, the ends' rows.
        packed = torch.from_numpy(np.concatenate([
            keys.view(np.int64).ravel(), (keys >> np.uint64(30)).view(np.int64).ravel(),
            scales.view(np.int64).ravel(), frac.view(np.int64), lo * n + rows, hi * n + rows,
            (np.where(left, n, 0) + rows).ravel()])).to(dev, non_blocking=True)
        cut = np.cumsum([0] + [depth * n] * 3 + [n] * 3)
        keys_d, highs_d, scales_d = (packed[cut[i]:cut[i + 1]].view(depth, n) for i in range(3))
        scales_d = scales_d.view(torch.float64)
        frac_d = packed[cut[3]:cut[4]].view(torch.float64)
        bank = self._bank.view((kept + 2) * n, size)
        if uniform:
            w_a, w_b, ends = self._bank[int(lo[0])], self._bank[int(hi[0])], None
            spare = [torch.empty_like(w_a) for _ in range(3 if depth > kept else 0)]
        else:
            ends = torch.index_select(bank, 0, packed[cut[4]:cut[6]])
            w_a, w_b = ends[:n], ends[n:]
            replaced = packed[cut[6]:].view(depth, n)  # the row of `ends` that each level's midpoint replaces
            spare = [torch.empty_like(w_a)]
        for level in range(start, depth):
            w_m = self._bank[level + 2] if level < kept else next(s for s in spare if s is not w_a and s is not w_b)
            torch.add(w_a, w_b, out=w_m).div_(2)
            w_m.add_(self._draws(keys_d[level], highs_d[level] if no_carry[level] else None)
                     .mul_(scales_d[level][:, None]))
            if ends is not None:
                ends.index_copy_(0, replaced[level], w_m)
            elif left[level, 0]:
                w_b = w_m
            else:
                w_a = w_m
        # Below the leaf width (sigma_max / 2**depth) the bridge mean is used.
        w = w_a + (w_b - w_a) * frac_d[:, None]
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


# Whose conventions a run follows: the initial noise a seed gives, its scaling, and (in comparisons.core.config) the
# schedule and sampler endings each tool uses. kdiffusion is this library's own (and k-diffusion's).
CONVENTIONS = ("kdiffusion", "comfyui", "a1111", "diffusers")
# diffusers' schedulers that work in sigma (init_noise_sigma from the spacing); the others work in VP form (x / sqrt(1 +
# sigma^2)) with init_noise_sigma 1: DDIM, DPMSolverMultistep, UniPC, DEIS, DDPM, LCM, PNDM.
DIFFUSERS_SIGMA_SPACE = ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_sde")


def convention_noise(convention, shape, seed, batch_size=1):
    """(batch_size, *shape) N(0, I) noise of a batch from one seed, drawn as each tool draws it on the CPU: ComfyUI's
    prepare_noise (torch.manual_seed(seed), then one torch.randn over the whole batch) and diffusers' randn_tensor
    with one CPU torch.Generator draw the batch at once; A1111 (its CPU RNG source) and kdiffusion draw image i from
    seed + i alone. Image 0 is initial_noise(shape, seed) under every convention."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    if convention in ("comfyui", "diffusers"):
        gen = torch.Generator().manual_seed(int(seed))
        return torch.randn((batch_size, *shape), generator=gen, dtype=torch.float32)
    return torch.stack([initial_noise(shape, int(seed) + i) for i in range(batch_size)])


def noise_scale(convention, sigma0, sigma_max, kind="eps", sampler=None, spacing=None):
    """The factor on N(0, I) noise that starts sampling from pure noise at the schedule's first sigma `sigma0` (the
    model's largest training sigma `sigma_max`), as each tool computes it. Flow models: sigma0 everywhere (ComfyUI's
    CONST noise_scaling, diffusers' init_noise_sigma 1 at sigma 1). Eps and v models: k-diffusion and A1111 take
    sigma0; ComfyUI's noise_scaling takes sqrt(1 + sigma0^2) when sigma0 reaches sigma_max (its max_denoise, rel_tol
    1e-5), else sigma0; diffusers' init_noise_sigma is sigma0 for its sigma-space schedulers with linspace or trailing
    spacing (their default spacing, linspace, for a schedule that names none), else sqrt(1 + sigma0^2) (leading
    spacing, and every VP-form scheduler, whose 1 in VP form is that in sigma form)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    sigma0, sigma_max = float(sigma0), float(sigma_max)
    if kind == "flow" or convention in ("kdiffusion", "a1111"):
        return sigma0
    if convention == "comfyui":
        max_denoise = math.isclose(sigma_max, sigma0, rel_tol=1e-5) or sigma0 > sigma_max
        return math.sqrt(1.0 + sigma0 ** 2) if max_denoise else sigma0
    if sampler in DIFFUSERS_SIGMA_SPACE and spacing in (None, "linspace", "trailing"):
        return sigma0
    return math.sqrt(1.0 + sigma0 ** 2)
