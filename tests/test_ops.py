"""The C kernels as dispatcher operators: every call goes through torch.ops.rrnn.*,
and bad arguments get a clear error before any pointer is touched."""

import pytest
import torch

from rrnn import RestrictedGRU, RestrictedLSTM
from rrnn.kernels import ops

from .op_log import OpLog as _Log


@pytest.mark.parametrize("cls, fwd, bwd, calls", [
    (RestrictedLSTM, "rrnn.lstm_seq.default", "rrnn.lstm_seq_backward.default", 2),  # per layer
    (RestrictedGRU, "rrnn.gru_seq.default", "rrnn.gru_seq_backward.default", 2),
])  # fmt: skip
def test_sequences_run_through_the_registered_operators(cls, fwd, bwd, calls):
    m = cls(6, 8, 2, sharing_rate=0.5)
    m.kernel = "shared-row"
    x = torch.randn(4, 3, 6, requires_grad=True)
    with _Log() as log:
        out, _ = m(x)
        out.sum().backward()
    assert log.names.count(fwd) == calls and log.names.count(bwd) == calls


def test_a_sequence_without_autograd_runs_through_the_inference_operator():
    m = RestrictedLSTM(6, 8, 2, sharing_rate=0.5)
    m.kernel = "shared-row"
    with torch.no_grad(), _Log() as log:
        m(torch.randn(4, 3, 6))
    assert log.names.count("rrnn.lstm_seq_infer.default") == 2  # one per layer
    assert "rrnn.lstm_seq.default" not in log.names  # nothing saved for a backward


def test_streaming_runs_through_the_stack_operator():
    m = RestrictedLSTM(6, 8, 3, sharing_rate=0.5).eval()
    with torch.no_grad(), _Log() as log:
        m(torch.randn(1, 2, 6))
    assert "rrnn.lstm_stream.default" in log.names


def test_gru_streaming_runs_through_the_stack_operator():
    m = RestrictedGRU(6, 8, 3, sharing_rate=0.5).eval()
    with torch.no_grad(), _Log() as log:
        m(torch.randn(1, 2, 6))
    assert log.names.count("rrnn.gru_stream.default") == 1  # one call for the three layers
    assert "rrnn.gru_step.default" not in log.names


def test_gru_stream_operator_checks_the_layer_lists():
    B, d, k = 1, 4, 3
    x, h = torch.zeros(B, k), torch.zeros(2, B, d)
    px, ph = [torch.zeros(3 * d, k), torch.zeros(3 * d, d)], [torch.zeros(3 * d, d)] * 2
    scratch = [torch.zeros(B, 3 * d), torch.zeros(B, 3 * d)] + [torch.zeros(B, d) for _ in range(4)]
    ops.gru_stream(x, h, px, ph, [None, None], [None, None], [0, 0], h.clone(), *scratch)
    with pytest.raises(ValueError, match="2 layers of state but 1 P_x"):
        ops.gru_stream(x, h, px[:1], ph, [None, None], [None, None], [0, 0], h.clone(), *scratch)
    with pytest.raises(ValueError, match=r"px\[1\] has shape"):
        ops.gru_stream(x, h, [px[0], px[0]], ph, [None, None], [None, None], [0, 0], h.clone(),
                       *scratch)  # fmt: skip
    with pytest.raises(ValueError, match=r"bh\[0\] has shape"):
        ops.gru_stream(x, h, px, ph, [None, None], [torch.zeros(d), None], [0, 0], h.clone(),
                       *scratch)  # fmt: skip
    with pytest.raises(ValueError, match="h0 and h_n overlap"):
        ops.gru_stream(x, h, px, ph, [None, None], [None, None], [0, 0], h, *scratch)


def _lstm_args(B=2, d=5, s=2, dtype=torch.float32):
    q = d - s
    m = s + 4 * q
    e = lambda *shape: torch.zeros(*shape, dtype=dtype)  # noqa: E731
    return [e(B, m), e(B, d), e(B, d), e(B, d), e(B, m), e(B, s), e(B, q), e(B, d), s]


def test_operators_check_dtype_shape_and_contiguity():
    args = _lstm_args()
    ops.lstm_step(*args)  # fine
    bad = list(args)
    bad[1] = bad[1].double()
    with pytest.raises(ValueError, match="c_prev has dtype torch.float64"):
        ops.lstm_step(*bad)
    bad = list(args)
    bad[4] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"sig has shape \(2, 3\), expected \(2, 14\)"):
        ops.lstm_step(*bad)
    bad = list(args)
    bad[2] = torch.zeros(5, 2).t()
    with pytest.raises(ValueError, match="c must be contiguous"):
        ops.lstm_step(*bad)
    bad = list(args)
    bad[-1] = 9
    with pytest.raises(ValueError, match="outside"):
        ops.lstm_step(*bad)
    with pytest.raises(ValueError, match="not supported"):
        ops.lstm_step(*[a.to(torch.bfloat16) if isinstance(a, torch.Tensor) else a for a in args])


def test_meta_tensors_are_checked_without_computing():
    args = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in _lstm_args()]
    ops.lstm_step(*args)
    args[0] = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match="z has shape"):
        ops.lstm_step(*args)


def test_stream_operator_checks_the_layer_lists():
    B, d, k = 1, 4, 3
    x = torch.zeros(B, k)
    h = torch.zeros(2, B, d)
    w = [torch.zeros(4 * d, k + d), torch.zeros(4 * d, d + d)]
    scratch = [torch.zeros(B, 4 * d), torch.zeros(B, 4 * d)] + [torch.zeros(B, d) for _ in range(3)]
    ops.lstm_stream(x, h, h.clone(), w, [None, None], [0, 0], h.clone(), h.clone(), *scratch)
    with pytest.raises(ValueError, match="2 layers of state but 1 weights"):
        ops.lstm_stream(x, h, h.clone(), w[:1], [None], [0], h.clone(), h.clone(), *scratch)
    with pytest.raises(ValueError, match=r"weights\[1\] has shape"):
        ops.lstm_stream(x, h, h.clone(), [w[0], w[0]], [None, None], [0, 0], h.clone(),
                        h.clone(), *scratch)  # fmt: skip


def _seq_args(T=3, B=2, d=5, s=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = d - s
    m = s + 4 * q
    r = lambda *shape: torch.randn(*shape, dtype=dtype, generator=g)  # noqa: E731
    e = lambda *shape: torch.zeros(*shape, dtype=dtype)  # noqa: E731
    xz, h0, c0, ph = r(T, B, m), r(B, d), r(B, d), r(m, d) * 0.5
    return xz, h0, c0, ph, [e(T + 1, B, d), e(T, B, d), e(T, B, m), e(T, B, s), e(T, B, q), e(T, B, d)]


def _widen(t: torch.Tensor, extra: int) -> torch.Tensor:
    """``t`` with ``extra`` more columns of NaN: rows wider than the operator reads."""
    wide = torch.full((*t.shape[:-1], t.shape[-1] + extra), float("nan"), dtype=t.dtype)
    wide[..., : t.shape[-1]] = t
    return wide


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("native_lib", [True, False])
def test_sequence_operators_equal_the_step_operators(native_lib, padding, monkeypatch):
    """lstm_seq / lstm_seq_backward against a Python loop over lstm_step /
    lstm_step_backward (with the C library and with its torch-op fallback); with
    ``padding``, xz has rows wider than m, whose extra columns (NaN) are never read
    or written."""
    from rrnn.kernels import native

    native.reset()
    if not native_lib:
        monkeypatch.setenv("RRNN_NATIVE", "0")
    try:
        T, B, d, s = 4, 3, 6, 2
        xz, h0, c0, ph, (cs, out, sig, ts, tg, tc) = _seq_args(T, B, d, s)
        z_in, m = xz.clone(), xz.shape[2]
        xz = _widen(xz, padding)
        cs[0] = c0
        ops.lstm_seq(xz, h0, ph, cs, out, sig, ts, tg, tc, s)
        assert xz[..., m:].isnan().all()
        xz = xz[..., :m]
        # the same by steps
        c, h = c0.clone(), h0.clone()
        bufs = [torch.zeros_like(t[0]) for t in (sig, ts, tg, tc)]
        for t in range(T):
            z = z_in[t] + h @ ph.t()
            c_new, h_new = torch.zeros_like(c), torch.zeros_like(h)
            ops.lstm_step(z, c, c_new, h_new, *bufs, s)
            torch.testing.assert_close(out[t], h_new, rtol=0, atol=1e-14)
            torch.testing.assert_close(cs[t + 1], c_new, rtol=0, atol=1e-14)
            torch.testing.assert_close(xz[t], z, rtol=0, atol=1e-14)  # xz now holds z_t
            c, h = c_new, h_new
        # backward, with a gradient on every output and on the final states
        d_out = torch.randn(T, B, d, dtype=xz.dtype)
        dh, dc = torch.randn(B, d, dtype=xz.dtype), torch.randn(B, d, dtype=xz.dtype)
        dz = torch.zeros(T, B, m, dtype=xz.dtype)
        dh_seq, dc_seq = dh.clone(), dc.clone()
        ops.lstm_seq_backward(ph, sig, ts, tg, tc, cs, d_out, dh_seq, dc_seq, dz, s)
        for t in range(T - 1, -1, -1):
            dz_t, dc_prev = torch.zeros_like(xz[t]), torch.zeros_like(dc)
            ops.lstm_step_backward(sig[t], ts[t], tg[t], tc[t], cs[t], dh + d_out[t], dc, dz_t, dc_prev, s)
            torch.testing.assert_close(dz[t], dz_t, rtol=0, atol=1e-13)
            dh, dc = dz_t @ ph, dc_prev
        torch.testing.assert_close(dh_seq, dh, rtol=0, atol=1e-13)
        torch.testing.assert_close(dc_seq, dc, rtol=0, atol=1e-13)
    finally:
        native.reset()


def test_sequence_operators_check_their_arguments():
    T, B, d, s = 3, 2, 5, 2
    xz, h0, c0, ph, (cs, out, sig, ts, tg, tc) = _seq_args(T, B, d, s)
    ops.lstm_seq(xz, h0, ph, cs, out, sig, ts, tg, tc, s)  # fine
    with pytest.raises(ValueError, match=r"cs has shape \(3, 2, 5\), expected \(4, 2, 5\)"):
        ops.lstm_seq(xz, h0, ph, cs[:3], out, sig, ts, tg, tc, s)
    with pytest.raises(ValueError, match="ph has dtype torch.float32"):
        ops.lstm_seq(xz, h0, ph.float(), cs, out, sig, ts, tg, tc, s)
    with pytest.raises(ValueError, match="outside"):
        ops.lstm_seq(xz, h0, ph, cs, out, sig, ts, tg, tc, 7)
    dh, dc, dz = torch.zeros_like(h0), torch.zeros_like(h0), torch.zeros_like(xz)
    ops.lstm_seq_backward(ph, sig, ts, tg, tc, cs, None, dh, dc, dz, s)  # no output gradient: fine
    with pytest.raises(ValueError, match=r"d_out has shape"):
        ops.lstm_seq_backward(ph, sig, ts, tg, tc, cs, torch.zeros(T, B, d + 1, dtype=xz.dtype),
                              dh, dc, dz, s)  # fmt: skip
    with pytest.raises(ValueError, match="dz must be contiguous"):
        ops.lstm_seq_backward(ph, sig, ts, tg, tc, cs, None, dh, dc,
                              torch.zeros(B, T, xz.shape[2], dtype=xz.dtype).transpose(0, 1), s)  # fmt: skip
    meta = [t.to("meta") for t in (xz, h0, ph, cs, out, sig, ts, tg, tc)]
    ops.lstm_seq(*meta, s)


@pytest.mark.parametrize("native_lib", [True, False])
def test_folded_sequence_operator_equals_the_unfolded_one(native_lib, monkeypatch):
    """lstm_seq given x: xz holds the private columns of x P_x^T (and the bias in all
    columns), each step adds (x_t + h) S^T to the shared ones; every output and
    buffer equals the unfolded call's on x_t P_x^T (S the same rows of P_x and P_h)."""
    from rrnn.kernels import native

    native.reset()
    if not native_lib:
        monkeypatch.setenv("RRNN_NATIVE", "0")
    try:
        for T, B, d, s in ((4, 3, 6, 2), (3, 5, 20, 20), (2, 2, 9, 1)):
            _, h0, c0, ph, bufs = _seq_args(T, B, d, s)
            g = torch.Generator().manual_seed(2)
            x = torch.randn(T, B, d, dtype=ph.dtype, generator=g)
            px = torch.cat([ph[:s], torch.randn(4 * (d - s), d, dtype=ph.dtype, generator=g)])
            bias = torch.randn(ph.shape[0], dtype=ph.dtype, generator=g)
            runs = []
            for fold in (False, True):
                cs, out, sig, ts, tg, tc = (b.clone() for b in bufs)
                cs[0] = c0
                xz = x @ px.t() + bias
                if fold:
                    xz[..., :s] = bias[:s]
                ops.lstm_seq(xz, h0, ph, cs, out, sig, ts, tg, tc, s, x if fold else None)
                # backward: given g, the shared part of each step's dh is kept there
                dh, dc = torch.ones(B, d, dtype=x.dtype), torch.ones(B, d, dtype=x.dtype)
                dz = torch.zeros(T, B, ph.shape[0], dtype=x.dtype)
                g = torch.full((T, B, d), float("nan"), dtype=x.dtype) if fold else None
                ops.lstm_seq_backward(ph, sig, ts, tg, tc, cs, torch.sin(out), dh, dc, dz, s, g)
                if fold:
                    torch.testing.assert_close(g, dz[..., :s] @ ph[:s], rtol=0, atol=1e-13)
                runs.append((xz, cs, out, sig, ts, tg, tc, dh, dc, dz))
            for a, b in zip(*runs):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    finally:
        native.reset()


def _infer_by_steps(xz, h0, c0, ph, bias, s):
    """What rrnn::lstm_seq_infer computes, by lstm_step calls."""
    h, c, outs = h0, c0, []
    for t in range(xz.shape[0]):
        z = xz[t] + h @ ph.t() + (0 if bias is None else bias)
        c_new, h_new = torch.zeros_like(c), torch.zeros_like(h)
        bufs = [torch.zeros(xz.shape[1], n, dtype=xz.dtype) for n in (xz.shape[2], s, h0.shape[1] - s, h0.shape[1])]
        ops.lstm_step(z.contiguous(), c, c_new, h_new, *bufs, s)
        outs.append(h_new)
        h, c = h_new, c_new
    return torch.stack(outs), c


def _infer_route(route: str, dtype, monkeypatch) -> dict:
    """Sets up one route of rrnn::lstm_seq_infer (the C time loop calling torch's
    BLAS, the Python loop used without that BLAS, or the torch-op version; skips
    where the first is unavailable) and returns the comparison tolerance."""
    from rrnn.kernels import native

    if route == "C loop" and (native.library() is None or native.blas_gemm(dtype) is None):
        pytest.skip("no C compiler, or torch exports no BLAS GEMM here")
    if route == "Python loop":
        monkeypatch.setenv("RRNN_BLAS", "0")
    if route == "torch ops":
        monkeypatch.setattr(native, "kernel", lambda name, d: None)
    return dict(rtol=0, atol=1e-13) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("route", ["C loop", "Python loop", "torch ops"])
@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inference_operator_equals_the_step_operator(route, has_bias, dtype, padding, monkeypatch):
    """rrnn::lstm_seq_infer (the C time loop calling torch's BLAS, the Python loop
    used without that BLAS, and the torch-op version) against lstm_step by steps,
    for an odd number of steps (c ends in c_n, not the spare) and an even one; with
    ``padding``, xz has rows wider than m, whose extra columns (NaN) are never read
    or written; P_h is read as given, (m, d)."""
    tol = _infer_route(route, dtype, monkeypatch)
    # the C step cuts each row into spans of 16 lanes: short spans, full vectors with
    # a partial one after (d = 41), and whole vectors only (d = 40 and 32); B = 37
    # splits into one block of rows per thread for the whole sequence (2 threads)
    sizes = ((5, 3, 6, 2), (4, 17, 9, 9), (2, 1, 4, 0), (3, 5, 41, 23), (2, 4, 40, 8), (2, 3, 32, 32), (3, 37, 20, 10))
    for T, B, d, s in sizes:
        xz, h0, c0, ph, _ = _seq_args(T, B, d, s, dtype=dtype)
        bias = torch.randn(ph.shape[0], dtype=dtype) if has_bias else None
        want_out, want_c = _infer_by_steps(xz, h0, c0, ph, bias, s)
        out, c_n = torch.full((T, B, d), float("nan"), dtype=dtype), torch.full_like(h0, float("nan"))
        xz = _widen(xz, padding)
        xz_in = xz.clone()
        ops.lstm_seq_infer(xz, h0, c0, ph, bias, out, c_n, s)
        torch.testing.assert_close(out, want_out, **tol)
        torch.testing.assert_close(c_n, want_c, **tol)
        m = ph.shape[0]
        assert not torch.equal(xz[..., :m], xz_in[..., :m])  # overwritten, as its schema says
        assert xz[..., m:].isnan().all()  # the padding is never written


@pytest.mark.parametrize("route", ["C loop", "Python loop", "torch ops"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_inference_operator_equals_the_step_operator(route, dtype, monkeypatch):
    """rrnn::lstm_seq_infer with ``fold``: out holds x on entry, xz only the private
    columns of x P_x^T, and each step computes the shared ones as (x_t + h) S^T. Its
    outputs equal the unfolded operator's maths (x_t S^T + h S^T) by steps; xz's
    shared columns (NaN on entry) are not read, and the padding is never written."""
    tol = _infer_route(route, dtype, monkeypatch)
    # every shared (s = d: no private rows), none worth folding aside; B = 37 splits
    # into one block of rows per thread (2 threads), B = 1 and 5 split each step
    for T, B, d, s, padding in ((5, 3, 6, 2, 0), (4, 17, 9, 9, 3), (3, 5, 41, 23, 0), (3, 37, 20, 10, 5),
                                (2, 1, 32, 16, 0), (1, 4, 7, 1, 2)):  # fmt: skip
        _, h0, c0, ph, _ = _seq_args(T, B, d, s, dtype=dtype)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(T, B, d, dtype=dtype, generator=g)
        px = torch.cat([ph[:s], torch.randn(4 * (d - s), d, dtype=dtype, generator=g)])  # same S
        bias = torch.randn(ph.shape[0], dtype=dtype, generator=g)
        want_out, want_c = _infer_by_steps(x @ px.t(), h0, c0, ph, bias, s)
        m = ph.shape[0]
        xz = torch.full((T, B, m + padding), float("nan"), dtype=dtype)
        xz[..., s:m] = x @ px[s:].t()
        out, c_n = x.clone(), torch.full_like(h0, float("nan"))
        ops.lstm_seq_infer(xz, h0, c0, ph, bias, out, c_n, s, True)
        torch.testing.assert_close(out, want_out, **tol)
        torch.testing.assert_close(c_n, want_c, **tol)
        assert xz[..., m:].isnan().all()  # the padding is never written


def test_layers_fold_where_the_input_is_as_wide_as_h(monkeypatch):
    """The inference path folds the shared rows exactly where x and h read the same
    S (input_size = hidden_size, or a layer after the first) and s > 0."""
    from rrnn import RestrictedLSTM

    seen = []
    real = ops.lstm_seq_infer
    monkeypatch.setattr(ops, "lstm_seq_infer", lambda *a: (seen.append(a[-1]), real(*a))[1])
    for k, r, want in ((5, 0.4, [False, True]), (7, 0.4, [True, True]), (7, 0.0, [False, False])):
        seen.clear()
        m = RestrictedLSTM(k, 7, 2, sharing_rate=r)
        m.kernel = "shared-row"
        x = torch.randn(4, 3, k)
        with torch.no_grad():
            got = m(x)
        assert seen == want, (k, r)
        torch.testing.assert_close(got, m.to_torch()(x))


def test_training_folds_where_the_shared_rows_are_at_least_twice_the_private(monkeypatch):
    """The training path folds only at s >= 2q (r >= 2/3; lstm.folds_in_training),
    where it measured faster, and its gradients match torch.nn's there."""
    from rrnn import RestrictedLSTM

    seen = []
    real = ops.lstm_seq
    monkeypatch.setattr(ops, "lstm_seq", lambda *a: (seen.append(a[-1] is not None), real(*a))[1])
    for r, want in ((0.5, [False, False]), (0.6, [False, False]), (0.7, [True, True]), (1.0, [True, True])):
        seen.clear()
        m = RestrictedLSTM(10, 10, 2, sharing_rate=r, dtype=torch.float64)
        m.kernel = "shared-row"
        x = torch.randn(4, 3, 10, dtype=torch.float64, requires_grad=True)
        y, (h, c) = m(x)
        (y.sin().sum() + c.sum()).backward()
        assert seen == want, r
        ref = m.to_torch()
        x_ref = x.detach().requires_grad_()
        y_ref, (_, c_ref) = ref(x_ref)
        (y_ref.sin().sum() + c_ref.sum()).backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
        # each shared entry's gradient is the sum over the matrices that read it
        S = m.weight_shared_l1.shape[0]
        want_shared = sum(getattr(ref, f"weight_{i}h_l1").grad.view(4, 10, 10)[:, :S] for i in "ih").sum(0)
        if S:
            torch.testing.assert_close(m.weight_shared_l1.grad, want_shared)


def test_inference_operator_checks_its_arguments():
    T, B, d, s = 3, 2, 5, 2
    xz, h0, c0, ph, (_, out, *_) = _seq_args(T, B, d, s)
    c_n = torch.zeros_like(h0)
    ops.lstm_seq_infer(xz, h0, c0, ph, None, out, c_n, s)  # fine
    ops.lstm_seq_infer(_widen(xz, 2), h0, c0, ph, None, out, c_n, s)  # rows wider than m: fine
    with pytest.raises(ValueError, match=r"ph has shape \(5, 14\), expected \(14, 5\)"):
        ops.lstm_seq_infer(xz, h0, c0, ph.t().contiguous(), None, out, c_n, s)  # P_h^T is not P_h
    with pytest.raises(ValueError, match="ph must be contiguous"):
        ops.lstm_seq_infer(xz, h0, c0, ph.t().contiguous().t(), None, out, c_n, s)
    with pytest.raises(ValueError, match=r"bias has shape \(13,\), expected \(14,\)"):
        ops.lstm_seq_infer(xz, h0, c0, ph, torch.zeros(13, dtype=xz.dtype), out, c_n, s)
    with pytest.raises(ValueError, match=r"xz has shape \(3, 2, 13\), expected \(3, 2, 14\)"):
        ops.lstm_seq_infer(xz[..., :13].contiguous(), h0, c0, ph, None, out, c_n, s)
    with pytest.raises(ValueError, match="c_n and c0 overlap|c0 and c_n overlap"):
        ops.lstm_seq_infer(xz, h0, c0, ph, None, out, c0, s)
    with pytest.raises(ValueError, match="c0 has dtype torch.float32"):
        ops.lstm_seq_infer(xz, h0, c0.float(), ph, None, out, c_n, s)
    meta = [t.to("meta") for t in (xz, h0, c0, ph)]
    ops.lstm_seq_infer(*meta, None, out.to("meta"), c_n.to("meta"), s)


def test_a_gemm_that_is_not_gemm_is_refused():
    """The check of torch's BLAS symbol before cells.c calls it can fail: a function
    that computes nothing (libc's getpid, called with GEMM's arguments) is caught."""
    import ctypes

    from rrnn.kernels import native

    f32, f64 = native.blas_gemm(torch.float32), native.blas_gemm(torch.float64)
    if f32 is None or f64 is None:
        pytest.skip("torch exports no BLAS GEMM here")
    assert native._gemm_works(f32, torch.float32) and native._gemm_works(f64, torch.float64)
    getpid = ctypes.cast(ctypes.CDLL(None).getpid, ctypes.c_void_p).value
    assert not native._gemm_works(getpid, torch.float32)


def _xent_ref(logits, target, bias, scale):
    z = logits.double() + (0 if bias is None else bias.double())
    loss = torch.logsumexp(z, 1) - z.gather(1, target[:, None])[:, 0]
    grad = (torch.softmax(z, 1) - torch.nn.functional.one_hot(target, z.shape[1])) * scale
    return loss, grad


@pytest.mark.parametrize("native_lib", [True, False])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_softmax_xent_rows(native_lib, dtype, tol, threads, with_bias, monkeypatch):
    from rrnn.kernels import native

    native.reset()
    if not native_lib:
        monkeypatch.setenv("RRNN_NATIVE", "0")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(threads)
        n, V = 7, 1031  # odd sizes: no row or vector width divides them
        logits = torch.randn(n, V, dtype=dtype, generator=g) * 4
        target = torch.randint(V, (n,), generator=g)
        bias = torch.randn(V, dtype=dtype, generator=g) if with_bias else None
        db = torch.full((V,), 0.5, dtype=dtype) if with_bias else None
        loss = torch.empty(n, dtype=torch.float64)
        want_loss, want_grad = _xent_ref(logits, target, bias, 0.125)
        block = logits.clone()
        ops.softmax_xent_(block, target, bias, loss, db, 0.125)
        torch.testing.assert_close(loss, want_loss, rtol=tol, atol=tol)
        torch.testing.assert_close(block.double(), want_grad, rtol=tol, atol=tol)
        if with_bias:  # accumulated onto what db held
            torch.testing.assert_close(db.double(), 0.5 + want_grad.sum(0), rtol=tol, atol=tol)
    finally:
        torch.set_num_threads(before)
        native.reset()


def test_softmax_xent_propagates_nan_and_checks_its_arguments():
    logits = torch.randn(3, 10)
    logits[1, 4] = float("nan")
    loss = torch.empty(3, dtype=torch.float64)
    ops.softmax_xent_(logits, torch.tensor([0, 1, 2]), None, loss, None, 1.0)
    assert loss[1].isnan() and logits[1].isnan().all()
    assert loss[[0, 2]].isfinite().all() and logits[[0, 2]].isfinite().all()
    good = dict(logits=torch.randn(3, 10), target=torch.tensor([0, 1, 2]), bias=None,
                loss=torch.empty(3, dtype=torch.float64), dbias=None, scale=1.0)  # fmt: skip
    for change, words in [
        (dict(target=torch.tensor([0, 1, 10])), "outside"),
        (dict(target=torch.tensor([0, -1, 2])), "outside"),
        (dict(target=torch.tensor([0, 1], dtype=torch.long)), "target must be contiguous"),
        (dict(target=torch.tensor([0, 1, 2], dtype=torch.int32)), "target must be"),
        (dict(loss=torch.empty(3)), "loss must be contiguous torch.float64"),
        (dict(bias=torch.zeros(9)), r"bias has shape \(9,\), expected \(10,\)"),
        (dict(dbias=torch.zeros(10, dtype=torch.float64)), "dbias has dtype torch.float64"),
        (dict(logits=torch.randn(10, 3).t()), "logits must be contiguous"),
        (dict(logits=torch.randn(3, 10, dtype=torch.bfloat16)), "not supported"),
    ]:
        args = dict(good, **change)
        with pytest.raises(ValueError, match=words):
            ops.softmax_xent_(*args.values())


def test_the_thread_count_changes_no_number():
    """The C kernels split batch rows over threads: every row's arithmetic is the
    same whatever the count, so outputs are bitwise equal (the bias gradient, summed
    per thread and then across, within rounding)."""
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            # the step kernels (a GEMM library may sum in another order per thread count)
            T, B, d, s = 1, 40, 12, 4
            xz, h0, c0, ph, (cs, out, sig, ts, tg, tc) = _seq_args(T, B, d, s, dtype=torch.float32)
            ops.lstm_step(xz[0], c0, cs[1], out[0], sig[0], ts[0], tg[0], tc[0], s)
            dh, dc, dz, dc_prev = h0 * 0.5, c0 * 0.25, torch.zeros_like(xz[0]), torch.zeros_like(c0)
            ops.lstm_step_backward(sig[0], ts[0], tg[0], tc[0], c0, dh, dc, dz, dc_prev, s)
            g = torch.Generator().manual_seed(3)
            logits = torch.randn(33, 301, generator=g)
            target = torch.randint(301, (33,), generator=g)
            bias, db = torch.randn(301, generator=g), torch.zeros(301)
            loss = torch.empty(33, dtype=torch.float64)
            ops.softmax_xent_(logits, target, bias, loss, db, 0.5)
            results.append((out, cs, dz, dc_prev, logits, loss, db))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(results[0][:-1], results[1][:-1]):
        assert torch.equal(a, b)
    torch.testing.assert_close(results[0][-1], results[1][-1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("native_lib", [True, False])
def test_gru_sequence_operator_reads_only_m_columns_of_a_padded_a(native_lib, monkeypatch):
    """rrnn::gru_seq with a in rows wider than m (NaN beyond): the same outputs as
    with rows of m values, and the padding is never read or written."""
    from rrnn.kernels import native

    native.reset()
    if not native_lib:
        monkeypatch.setenv("RRNN_NATIVE", "0")
    try:
        g = torch.Generator().manual_seed(3)
        for T, B, d, s in ((4, 3, 6, 2), (3, 5, 41, 23), (2, 4, 20, 0)):
            m = s + 3 * (d - s)
            r = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=g)  # noqa: E731
            a, h0, ph, bh = r(T, B, m), r(B, d), r(m, d) * 0.5, r(m)
            results = []
            for a_in in (a.clone(), _widen(a, 5)):
                bufs = [torch.zeros(T, B, n, dtype=a.dtype) for n in (d, d, d - s, d, d)]
                ops.gru_seq(a_in, h0, ph, bh, *bufs, s)
                results.append(bufs)
                if a_in.shape[2] > m:
                    assert a_in[..., m:].isnan().all()
                    assert torch.equal(a_in[..., :m], a)  # a is only read
            for want, got in zip(*results):
                assert torch.equal(want, got)
    finally:
        native.reset()


def test_the_layers_hand_the_sequence_operators_zeros_as_padding(monkeypatch):
    """The columns past m of the padded operands are zeros, not what the allocator
    left there (torch.empty fills memory with NaN under deterministic mode, as
    here), so that copies of them compare equal (tests/test_opcheck.py compares the
    two paths' copies)."""
    seen = {}

    def spy(name, real):
        def call(*args):
            seen[name] = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
            return real(*args)

        return call

    for name in ("lstm_seq", "lstm_seq_infer", "gru_seq"):
        monkeypatch.setattr(ops, name, spy(name, getattr(ops, name)))
    lstm, gru = RestrictedLSTM(5, 7, 1, sharing_rate=0.4), RestrictedGRU(5, 7, 1, sharing_rate=0.4)
    lstm.kernel = gru.kernel = "shared-row"
    x = torch.randn(3, 2, 5, requires_grad=True)
    torch.use_deterministic_algorithms(True)
    try:
        lstm(x)
        gru(x)
        with torch.no_grad():
            lstm(x)
    finally:
        torch.use_deterministic_algorithms(False)
    padded = {"lstm_seq": ["xz"], "lstm_seq_infer": ["xz"], "gru_seq": ["a"]}
    for op, names in padded.items():
        args = dict(zip(ops._arg_names(op), seen[op]))
        d, s = args["h0"].shape[1], args["s"]
        m = s + (4 if op.startswith("lstm") else 3) * (d - s)
        for name in names:
            assert args[name].shape[-1] == ops.padded_width(m) > m, (op, name)
            assert torch.equal(args[name][..., m:], torch.zeros_like(args[name][..., m:])), (op, name)


def test_gru_sequence_operators_check_their_arguments():
    T, B, d, s = 3, 2, 5, 2
    m = s + 3 * (d - s)
    z = lambda *shape: torch.zeros(*shape)  # noqa: E731
    a, h0, ph, bh = z(T, B, m), z(B, d), z(m, d), z(m)
    bufs = [z(T, B, d), z(T, B, d), z(T, B, d - s), z(T, B, d), z(T, B, d)]  # out, r, z, n, gn
    ops.gru_seq(a, h0, ph, bh, *bufs, s)  # fine
    ops.gru_seq(a, h0, ph, None, *bufs, s)  # no bias: fine
    with pytest.raises(ValueError, match=r"bh has shape \(4,\), expected \(11,\)"):
        ops.gru_seq(a, h0, ph, z(4), *bufs, s)
    with pytest.raises(ValueError, match="h0 has dtype torch.float32, the others torch.float64"):
        ops.gru_seq(a.double(), h0, ph, bh, *bufs, s)
    out, r, zz, n, gn = bufs
    dh, da, dg = z(B, d), z(T, B, m), z(T, B, m)
    ops.gru_seq_backward(ph, r, zz, n, gn, h0, out, None, dh, da, dg, s)
    with pytest.raises(ValueError, match=r"dg has shape"):
        ops.gru_seq_backward(ph, r, zz, n, gn, h0, out, None, dh, da, z(T, B, m + 1), s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gru_step_in_c_equals_its_torch_op_version(dtype):
    """rrnn::gru_step's C kernel (each gate a span of 16 lanes, the last one masked
    or padded) against the torch ops it replaces, for spans that are short, whole
    vectors with a partial one (d = 41), and whole vectors only (d = 40 and 32)."""
    from rrnn.kernels import native
    from rrnn.kernels.fallbacks import gru_step_ops

    if native.kernel("gru_fwd", dtype) is None:
        pytest.skip("no C compiler here")
    tol = dict(rtol=0, atol=1e-13) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    for B, d, s in ((3, 6, 2), (5, 41, 23), (4, 40, 8), (3, 32, 32), (2, 20, 0)):
        q = d - s
        a, g = (3 * torch.randn(B, s + 3 * q, dtype=dtype) for _ in range(2))
        h_prev = torch.randn(B, d, dtype=dtype)
        want = [torch.zeros(B, n, dtype=dtype) for n in (d, d, q, d, d)]  # h, r, z, n, gn
        got = [torch.full_like(w, float("nan")) for w in want]
        gru_step_ops(a, g, h_prev, *want, s, q)
        ops.gru_step(a, g, h_prev, *got, s)
        for name, x, y in zip(("h", "r", "z", "n", "gn"), got, want):
            torch.testing.assert_close(x, y, **tol, msg=name)
