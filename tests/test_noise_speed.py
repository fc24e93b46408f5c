"""The seeded Brownian noise's fast descent (#36): bit-identical to the plain bisection it replaced, and its work
counted (draws and tensor operations per step), never timed."""
import math

import numpy as np
import pytest
import torch

from sampler_lib import BrownianNoiseSampler, get_sigmas_karras
from sampler_lib.noise import _C, _Draws, _mix, counter_normal, mix


def plain_w(seeds, sigma_max, size, t, depth=24):
    """W(t) as the noise sampler computed it before #36 (torch.where over the batch at every level): the reference
    whose bits the stored study arms carry."""
    t = torch.as_tensor(t, dtype=torch.float64)
    n = len(seeds)
    a = torch.zeros(n, dtype=torch.float64)
    b = torch.full_like(a, sigma_max)
    node = mix(torch.tensor(seeds, dtype=torch.int64), 0)
    w_a = torch.zeros(n, size, dtype=torch.float64)
    w_b = math.sqrt(sigma_max) * counter_normal(node, size)
    for _ in range(depth):
        m = (a + b) / 2
        w_m = (w_a + w_b) / 2 + ((b - a) / 4).sqrt()[:, None] * counter_normal(mix(node, 3), size)
        left = t < m
        b, a = torch.where(left, m, b), torch.where(left, a, m)
        w_b, w_a = torch.where(left[:, None], w_m, w_b), torch.where(left[:, None], w_a, w_m)
        node = mix(node, torch.where(left, 1, 2))
    return w_a + (w_b - w_a) * ((t - a) / (b - a))[:, None]


def plain_draw(seeds, sigma_max, shape, sigma, sigma_next, dtype=torch.float32):
    lo, hi = torch.minimum(sigma, sigma_next), torch.maximum(sigma, sigma_next)
    size = math.prod(shape)
    dw = plain_w(seeds, sigma_max, size, sigma_next.clamp(max=sigma_max)) - plain_w(
        seeds, sigma_max, size, sigma.clamp(max=sigma_max))
    length = hi - lo
    out = torch.where((length > 0)[:, None], dw * length.clamp(min=1e-300).rsqrt()[:, None], torch.zeros_like(dw))
    return out.reshape(len(seeds), *shape).to(dtype)


def per_item(values, n):
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1).expand(n).contiguous()


CASES = [  # shape (batch first), seeds, sigma_max
    ((3, 4, 8, 8), [1, 2, 3], 21.9),
    ((2, 3, 5, 7), [0, 2 ** 63 - 1], 15.0),  # 105 values an item: not a multiple of the vector width
    ((4, 3, 16, 16), [5, 5, 6, 5], 80.0),  # a repeated seed, as a study's arms share one
    ((1, 1, 1, 1), [123456789], 1.0),
]


@pytest.mark.parametrize("shape, seeds, sigma_max", CASES)
def test_a_schedule_draws_the_plain_bisections_bits(shape, seeds, sigma_max):
    """One schedule for the batch (the fast path: whole tensors, no per-item selection, the last path's top levels
    reused), then revisited out of order, a zero-length step and a step inside one leaf."""
    x = torch.zeros(shape)
    ns = BrownianNoiseSampler(x, seeds, sigma_max)
    sig = get_sigmas_karras(25, 0.03, sigma_max * 0.9).double()
    calls = [(sig[i], sig[i + 1]) for i in range(len(sig) - 1)]
    calls += [(sig[3], sig[9]), (sig[9], sig[9]), (sig[2], sig[2] * (1 - 1e-9)), (sig[0] * 1.1, sig[5] * 0.5)]
    for s, s_next in calls:
        s, s_next = per_item(s, len(seeds)), per_item(s_next, len(seeds))
        assert torch.equal(ns(s, s_next), plain_draw(seeds, sigma_max, shape[1:], s, s_next))


@pytest.mark.parametrize("shape, seeds, sigma_max", CASES)
def test_per_item_sigmas_draw_the_plain_bisections_bits(shape, seeds, sigma_max):
    """Items at different sigmas (per-item schedules): the ends are selected row by row."""
    gen = torch.Generator().manual_seed(7)
    x = torch.zeros(shape, dtype=torch.float64)
    ns = BrownianNoiseSampler(x, seeds, sigma_max)
    for _ in range(12):
        s = torch.rand(len(seeds), generator=gen, dtype=torch.float64) * sigma_max
        s_next = s * torch.rand(len(seeds), generator=gen, dtype=torch.float64)
        assert torch.equal(ns(s, s_next), plain_draw(seeds, sigma_max, shape[1:], s, s_next, torch.float64))


@pytest.mark.parametrize("depth", [3, 12, 13, 30])
def test_any_depth_draws_the_plain_bisections_bits(depth):
    """Depths below, at and past the levels kept between calls."""
    seeds, shape = [9, 10], (2, 2, 4, 4)
    ns = BrownianNoiseSampler(torch.zeros(shape), seeds, 10.0, depth=depth)
    for s, s_next in [(9.0, 7.5), (7.5, 7.4), (7.4, 1.0), (1.0, 0.999999)]:
        s, s_next = per_item(s, 2), per_item(s_next, 2)
        dw = plain_w(seeds, 10.0, 32, s_next, depth) - plain_w(seeds, 10.0, 32, s, depth)
        want = dw * (s - s_next).rsqrt()[:, None]
        assert torch.equal(ns(s, s_next), want.reshape(shape).float())


def _keys_with_low_bits(low, count):
    """Counter keys (node * C0 + C1 mod 2**64) whose low 30 bits are `low`, with the nodes that make them."""
    inv = pow(0x9E3779B97F4A7C15, -1, 1 << 64)
    keys = [(k << 30 | low) for k in (1, 12345, (1 << 33) + 7, (1 << 34) - 1)][:count]
    nodes = [((k - 0x632BE59BD9B4E019) * inv) % (1 << 64) for k in keys]
    assert all((node * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64) == k for node, k in zip(nodes, keys))
    signed = lambda v: v - (1 << 64) if v >= 1 << 63 else v  # noqa: E731
    return torch.tensor([signed(k) for k in keys]), torch.tensor([signed(v) for v in nodes])


@pytest.mark.parametrize("low", [0, 12345, (1 << 30) - 64, (1 << 30) - 1])
def test_draws_equal_counter_normal_with_and_without_the_first_xor_shift_shortcut(low):
    size = 64
    keys, nodes = _keys_with_low_bits(low, 4)
    want = counter_normal(nodes, size)
    draws = _Draws(4, size, "cpu")
    assert torch.equal(draws(keys).clone(), want)
    carries = low + size - 1 >= 1 << 30
    with_highs = draws(keys, torch.bitwise_right_shift(keys, 30) & ((1 << 34) - 1)).clone()
    assert torch.equal(with_highs, want) != carries  # the shortcut holds exactly when no index carries


def test_counter_keys_on_the_host_are_mixs():
    from sampler_lib.noise import _mix_host
    values = [0, 1, 7, 2 ** 40 + 3, 2 ** 62 + 12345, 2 ** 63 - 1]
    for b in (0, 1, 2, 3):
        got = _mix_host(np.array(values, dtype=np.uint64), np.uint64(b))
        assert got.tolist() == [_mix(a, b) for a in values]
    assert _C[0] == 0x9E3779B97F4A7C15 - (1 << 64)


class _Passes(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the operations that write a whole batch's worth of values (views and small tensors left out)."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and any(isinstance(o, torch.Tensor) and o.numel() >= self.numel
                                    for o in (out if isinstance(out, (tuple, list)) else [out])):
            self.count += 1
        return out


def test_work_per_step_is_counted_not_timed(monkeypatch):
    """The cost of a step is its draws (one Box-Muller pass over the batch each) and the tensor operations around
    them. Before #36 every W descended all 24 levels from the root (25 draws a step, 35 passes over the batch a
    draw); now a W descends from where its path leaves the last one's (a 25-step Karras schedule shares 5.7
    levels on average), in 28.6 passes a level."""
    calls = []
    real = _Draws.__call__
    monkeypatch.setattr(_Draws, "__call__", lambda self, *a: (calls.append(1), real(self, *a))[1])
    x = torch.zeros(4, 4, 16, 16)
    ns = BrownianNoiseSampler(x, [1, 2, 3, 4], 14.6 * 1.5)
    sig = get_sigmas_karras(25, 0.0292, 14.6)
    ns(sig[0], sig[1])
    first = len(calls)
    assert first == 2 * 24 - 3  # two Ws, the second from where its path leaves the first's (at level 2)
    calls.clear()
    ops = _Passes(x.numel())
    with ops:
        for i in range(1, 24):
            ns(sig[i], sig[i + 1])
    draws_per_step = len(calls) / 23
    print(f"{draws_per_step:.2f} draws a step, {ops.count / len(calls):.2f} passes a draw")
    assert draws_per_step <= 19.0, draws_per_step  # 18.3 today; 24 when no level is kept
    assert ops.count / len(calls) <= 30, ops.count / len(calls)  # 28.6 today: the draw, the bridge, the ends
