"""The C kernels' sigmoid and tanh against torch's, in ulp, over a sweep with tiny,
large and non-finite inputs (read off the LSTM step's sig and tan_g outputs)."""

import pytest
import torch

from rrnn.kernels import native, ops


def _sweep(dtype):
    tiny = torch.tensor([1e-30, 1e-12, 1e-8, 1e-6, 1e-4, 1e-3, 0.01, 0.1], dtype=torch.float64)
    mid = torch.linspace(-6, 6, 241, dtype=torch.float64)
    big = torch.tensor([9.0, 15.0, 20.0, 40.0, 80.0, 100.0, 1e4], dtype=torch.float64)
    odd = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan")])
    x = torch.cat([tiny, -tiny, mid, big, -big, odd.double()])
    return x.to(dtype)


def _step(x):
    """sigmoid of every z column and tanh of the g columns, from the C step (s = 0)."""
    q = x.numel()
    z = torch.cat([x, x, x, x]).reshape(1, 4 * q)  # [P_i | P_f | P_g | P_o]
    c_prev = torch.zeros(1, q, dtype=x.dtype)
    out = [torch.empty(1, n, dtype=x.dtype) for n in (q, q, 4 * q, 0, q, q)]
    c, h, sig, tan_s, tan_g, tc = out
    ops.lstm_step(z, c_prev, c, h, sig, tan_s, tan_g, tc, 0)
    return sig[0, :q], tan_g[0]


def _ulp(got, want):
    """Distance in units of the last place of ``want`` (0 where both are NaN or equal)."""
    spacing = torch.nextafter(want.abs(), torch.tensor(float("inf"), dtype=want.dtype))
    spacing = spacing - want.abs()
    tiny = torch.finfo(want.dtype).tiny
    d = (got - want).abs() / torch.maximum(spacing, torch.full_like(spacing, tiny))
    same = (got == want) | (got.isnan() & want.isnan())
    return torch.where(same, torch.zeros_like(d), d)


@pytest.mark.skipif(native.library() is None, reason="needs the compiled C kernels (a C compiler)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_and_tanh_within_a_few_ulp_of_torch(dtype):
    x = _sweep(dtype)
    sig, tan = _step(x)
    # tanh: a few ulp everywhere, near 0 included (the old 1 - 2/(1 + e^2x) was 4.6%
    # off at 1e-6 and returned 0 for 1e-8 in float32)
    assert _ulp(tan, torch.tanh(x)).max() <= 4, list(zip(x.tolist(), tan.tolist()))
    assert torch.equal(tan.isnan(), x.isnan())
    # sigmoid: a few ulp where torch's value is a normal number; 0 where it underflows
    want = torch.sigmoid(x)
    normal = want.abs() >= torch.finfo(dtype).tiny
    assert _ulp(sig[normal], want[normal]).max() <= 4
    assert (sig[~normal & ~x.isnan()].abs() <= torch.finfo(dtype).tiny).all()
    assert torch.equal(sig.isnan(), x.isnan())
