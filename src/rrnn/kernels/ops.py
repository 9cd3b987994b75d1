"""The C step kernels as operators registered with torch's dispatcher.

Every call into ``cells.c`` goes through one of these ``torch.ops.rrnn.*``
operators, never through a raw pointer taken elsewhere:

==========================  ==================================================
``rrnn::lstm_step``         one packed LSTM step, forward (see :mod:`.lstm`)
``rrnn::lstm_step_backward`` its backward
``rrnn::gru_step``          one packed GRU step, forward (see :mod:`.gru`)
``rrnn::gru_step_backward`` its backward
``rrnn::lstm_seq``          a whole sequence of one packed LSTM layer, forward: the
                            recurrent GEMM and the fused step per time step; given
                            x, the shared rows as (x_t + h_{t-1}) S^T
``rrnn::lstm_seq_backward`` its backward (back through time); given g, it keeps each
                            step's shared part dz_S S for a folded layer's dx
``rrnn::lstm_seq_infer``    a whole sequence of one packed LSTM layer without autograd:
                            the time loop in C, the recurrent GEMM by torch's BLAS;
                            with ``fold``, the shared rows as (x_t + h_{t-1}) S^T
``rrnn::gru_seq``           a whole sequence of one packed GRU layer, forward
``rrnn::gru_seq_backward``  its backward (back through time)
``rrnn::lstm_stream``       one inference step of a whole unidirectional packed LSTM stack
``rrnn::gru_stream``        the same for a packed GRU stack
``rrnn::softmax_xent_``     a block of logits rows -> per-row cross-entropy and, in
                            place, its gradient (see :mod:`rrnn.lm.loss`)
==========================  ==================================================

Each is described once, in :data:`OPS` (schema, where its sizes come from, its
tensors' shapes, its C function or CPU kernel, its torch-op version); the
registration, the argument checks, the Meta kernel and a step operator's C call
all read that entry, and the ctypes argument types come from the C prototypes
(:func:`rrnn.kernels.native.c_signatures`). Each has a schema (the tensors it
writes are marked mutable: the contract of what it overwrites, kept by the C
kernel and the torch-op version alike and checked by ``torch.library.opcheck``
in tests/test_opcheck.py), a CPU kernel that
checks dtype (float32 or float64, all alike), device, shape and contiguity before
any pointer is touched and then calls the C function (or the torch-op version
of the same arithmetic where no compiler was found), and a Meta kernel with the
same checks for tracing. A CUDA tensor gets the dispatcher's own error (no CUDA
kernel is registered: the layers take the reference path there). The operators
do not record autograd: the shared-row autograd Functions call them inside their
forward and backward (with ``once_differentiable``), and streaming runs under
``no_grad``.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import native
from .fallbacks import gru_backward_ops, gru_step_ops, lstm_backward_ops, lstm_step_ops
from .xent import softmax_xent_ops

_lib = torch.library.Library("rrnn", "DEF")


class KernelArgumentError(ValueError):
    pass


def _check(op: str, tensors: dict[str, Tensor], shapes: dict[str, tuple]) -> torch.dtype:
    """Same dtype (float32/float64), one device, the expected shapes, contiguous."""
    first = next(iter(tensors.values()))
    dtype, device = first.dtype, first.device
    if dtype not in (torch.float32, torch.float64):
        raise KernelArgumentError(f"rrnn::{op}: dtype {dtype} is not supported (float32 or float64)")
    for name, t in tensors.items():
        if t.dtype != dtype:
            raise KernelArgumentError(
                f"rrnn::{op}: {name} has dtype {t.dtype}, the others {dtype}; convert it"
            )
        if t.device != device:
            raise KernelArgumentError(f"rrnn::{op}: {name} is on {t.device}, the others on {device}")
        want = shapes.get(name)
        if want is not None and tuple(t.shape) != want:
            raise KernelArgumentError(
                f"rrnn::{op}: {name} has shape {tuple(t.shape)}, expected {want}"
            )
        if not t.is_contiguous():
            raise KernelArgumentError(f"rrnn::{op}: {name} must be contiguous")
    if device.type != "meta":  # meta tensors have no memory to overlap
        _check_no_overlap(op, tensors)
    return dtype


@functools.cache
def _written(op: str) -> frozenset[str]:
    """The arguments an operator writes, as its schema marks them (``Tensor(a!)``)."""
    schema = getattr(torch.ops.rrnn, op).default._schema
    return frozenset(a.name for a in schema.arguments if a.alias_info and a.alias_info.is_write)


def _check_no_overlap(op: str, tensors: dict[str, Tensor]) -> None:
    """The C kernels take every pointer as restrict and write some arguments while
    reading others: a written tensor that shares memory with any other argument
    would give wrong numbers, so it is refused (inputs may share memory with each
    other). Contiguous tensors, so each spans [data_ptr, data_ptr + nbytes)."""
    try:
        spans = sorted(
            (ptr := t.data_ptr(), ptr + t.nbytes, name) for name, t in tensors.items() if t.nbytes
        )
    except RuntimeError:  # fake tensors (torch.compile, export) have no memory
        return
    written = _written(op)
    for i, (_, end_a, a) in enumerate(spans):
        for start_b, _, b in spans[i + 1 :]:
            if start_b >= end_a:
                break
            if a not in written and b not in written:
                continue
            raise KernelArgumentError(
                f"rrnn::{op}: {a} and {b} overlap in memory (the same tensor, or views "
                f"of one) and the operator writes {a if a in written else b}; pass "
                "tensors that share no memory"
            )


def _lstm_shapes(B, d, s):
    q = d - s
    m = s + 4 * q
    return m, {"z": (B, m), "c_prev": (B, d), "c": (B, d), "h": (B, d), "sig": (B, m),
               "tan_s": (B, s), "tan_g": (B, q), "tanh_c": (B, d)}  # fmt: skip


def _lstm_step_shapes(T, B, d, s):
    """``rrnn::lstm_step`` and its backward (T unused)."""
    m, shapes = _lstm_shapes(B, d, s)
    return {**shapes, "dh": (B, d), "dc": (B, d), "dz": (B, m), "dc_prev": (B, d)}


def _gru_step_shapes(T, B, d, s):
    """``rrnn::gru_step`` and its backward (T unused)."""
    q = d - s
    m = s + 3 * q
    return {"a": (B, m), "g": (B, m), "h": (B, d), "h_new": (B, d), "r": (B, d), "z": (B, q),
            "n": (B, d), "gn": (B, d), "h_prev": (B, d), "dh": (B, d), "da": (B, m),
            "dg": (B, m), "dh_direct": (B, d)}  # fmt: skip


def _dims(op: str, name: str, t, rank: int) -> tuple[int, ...]:
    """``t.shape``, once ``t`` is a tensor of ``rank`` dimensions (named error otherwise)."""
    if not isinstance(t, Tensor) or t.dim() != rank:
        got = f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise KernelArgumentError(f"rrnn::{op}: {name} must be a {rank}-D tensor, got {got}")
    return tuple(t.shape)


def _check_s(op, s, d):
    if not 0 <= s <= d:
        raise KernelArgumentError(f"rrnn::{op}: shared rows s={s} outside [0, {d}]")


# --- The sequence operators' row stride ----------------------------------------------
def padded_width(m: int) -> int:
    """The row stride of x P_x^T in the LSTM's and GRU's sequence operators (and of
    P_h^T in ``lstm_seq_infer``): m rounded up to a multiple of 16 values (64
    bytes). MKL's single-precision GEMM slows down when the output's rows are not
    (AMD EPYC family 25: 2800 x 200 by 200 x 500 took 9.2 ms against 6.3 ms at 496
    and 512; docs/kernels.md). The GEMMs compute m columns; the rest are not read."""
    return -(-m // 16) * 16


def padded_empty(like: Tensor, *shape: int, m: int) -> Tensor:
    """A new tensor ``(*shape, padded_width(m))`` of ``like``'s dtype and device: its
    first m columns for the caller to fill, the rest zeros. The operators never read
    them, but defined values keep copies comparable (a NaN left there by the
    allocator compares unequal to itself)."""
    w = padded_width(m)
    t = like.new_empty(*shape, w)
    if w > m:
        t[..., m:].zero_()
    return t


# --- LSTM layer, whole sequence ------------------------------------------------------
def _seq_shapes(T, B, d, s):
    q = d - s
    m = s + 4 * q
    return m, {"xz": (T, B, m), "h0": (B, d), "ph": (m, d), "cs": (T + 1, B, d),
               "out": (T, B, d), "sig": (T, B, m), "tan_s": (T, B, s), "tan_g": (T, B, q),
               "tanh_c": (T, B, d), "d_out": (T, B, d), "dh": (B, d), "dc": (B, d), "x": (T, B, d), "g": (T, B, d),
               "dz": (T, B, m), "c0": (B, d), "c_n": (B, d),
               "bias": (m,)}  # fmt: skip


class _Steps:
    """Pointers to step ``t`` of ``(T, ...)`` buffers, for the C calls of a time loop."""

    def __init__(self, *tensors: Tensor):
        self.base = [0 if t is None else t.data_ptr() for t in tensors]
        self.step = [0 if t is None else t[0].numel() * t.element_size() for t in tensors]

    def at(self, t: int) -> list[int]:
        return [b + t * k for b, k in zip(self.base, self.step)]


def _lstm_seq_cpu(xz, h0, ph, cs, out, sig, tan_s, tan_g, tanh_c, s, x=None):
    dtype = _check_op("lstm_seq", (xz, h0, ph, cs, out, sig, tan_s, tan_g, tanh_c, s, x))
    T, B, w = xz.shape  # w >= m: xz's row stride
    m, d = ph.shape
    pht = ph.t().contiguous()  # (d, m): measured a few percent faster per step than the view
    zs, outs = xz[:, :, :m].unbind(0), out.unbind(0)  # the GEMM writes rows of w values
    step = _recurrent_product(zs, pht, s, x)
    fn = native.kernel("lstm_fwd_strided", dtype)
    if fn is None:
        h = h0
        for t in range(T):
            step(t, h)
            lstm_step_ops(zs[t], cs[t], cs[t + 1], outs[t], sig[t], tan_s[t], tan_g[t], tanh_c[t], s, d - s)
            h = outs[t]
        return
    at = _Steps(xz, cs, out, sig, tan_s, tan_g, tanh_c).at
    h = h0
    for t in range(T):
        step(t, h)  # z_t = x_t P_x^T + bias (already in xz) + h_{t-1} P_h^T
        z, c_prev, h_t, sg, ts, tg, tc = at(t)
        fn(B, s, d - s, w, z, c_prev, at(t + 1)[1], h_t, sg, ts, tg, tc)
        h = outs[t]


def _recurrent_product(zs, pht, s: int, x, shared_unset: bool = False):
    """``step(t, h)``: adds step t's recurrent product to ``zs[t]`` (B, m). Without
    ``x``, ``h P_h^T``. With ``x`` (T, B, d: the folded form of lstm_seq and
    lstm_seq_infer), zs[t] holds the private columns of x_t P_x^T, and the shared
    columns take ``(x_t + h) S^T``: x and h read the same s shared rows
    (kernels/lstm.py); added to what they hold (lstm_seq: the bias), or, with
    ``shared_unset`` (lstm_seq_infer), written over it unread. x[t] is read before
    anything else of the step, so x may be the output buffer being filled."""
    m = pht.shape[1]
    if x is None:
        return lambda t, h: zs[t].addmm_(h, pht[:, :m])
    st, phpt = pht[:, :s], pht[:, s:m]
    u = torch.empty_like(x[0])

    def step(t, h):
        torch.add(x[t], h, out=u)
        if shared_unset:
            torch.mm(u, st, out=zs[t][:, :s])
        else:
            zs[t][:, :s].addmm_(u, st)
        zs[t][:, s:].addmm_(h, phpt)

    return step


def _recurrent_gradient(dzs, ph, dh, s: int, g):
    """``back(t)``: dh = dz_t P_h, the gradient reaching h_{t-1}. With ``g`` (T, B, d;
    lstm_seq_backward's fold) the shared columns' part ``dz_S S`` is kept in g[t]
    too: a folded layer's x_t read S as h_{t-1} did, so its input gradient takes the
    same product (kernels/lstm.py) instead of computing it again."""
    if g is None:
        return lambda t: torch.mm(dzs[t], ph, out=dh)
    shared, private = ph[:s], ph[s:]

    def back(t):
        torch.mm(dzs[t][:, :s], shared, out=g[t])
        torch.addmm(g[t], dzs[t][:, s:], private, out=dh)

    return back


def _lstm_seq_backward_cpu(ph, sig, tan_s, tan_g, tanh_c, cs, d_out, dh, dc, dz, s, g=None):
    dtype = _check_op("lstm_seq_backward", (ph, sig, tan_s, tan_g, tanh_c, cs, d_out, dh, dc, dz, s, g))
    T, B, _ = sig.shape
    d = dh.shape[1]
    dzs = dz.unbind(0)
    back = _recurrent_gradient(dzs, ph, dh, s, g)
    spare = torch.empty_like(dc)  # dc and dc_prev alternate between dc and spare
    cur, nxt = dc, spare
    fn = native.kernel("lstm_bwd_out", dtype)
    if fn is None:
        for t in range(T - 1, -1, -1):
            dy = dh if d_out is None else dh.add_(d_out[t])
            lstm_backward_ops(sig[t], tan_s[t], tan_g[t], tanh_c[t], cs[t], dy, cur, dzs[t], nxt, s, d - s)
            back(t)
            cur, nxt = nxt, cur
    else:
        at = _Steps(sig, tan_s, tan_g, tanh_c, cs, d_out, dz).at
        p_dh = dh.data_ptr()
        for t in range(T - 1, -1, -1):
            sg, ts, tg, tc, c_prev, dy_out, dz_t = at(t)
            fn(B, s, d - s, sg, ts, tg, tc, c_prev, p_dh, dy_out or None, cur.data_ptr(), dz_t,
               nxt.data_ptr())  # fmt: skip
            back(t)  # the gradient reaching h_{t-1} through P_h
            cur, nxt = nxt, cur
    if cur is not dc:
        dc.copy_(cur)


def _lstm_seq_infer_cpu(xz, h0, c0, ph, bias, out, c_n, s, fold=False):
    dtype = _check_op("lstm_seq_infer", (xz, h0, c0, ph, bias, out, c_n, s))
    T, B, w = xz.shape  # w >= m: the row stride of xz (see padded_width)
    d = h0.shape[1]
    m = s + 4 * (d - s)
    if T == 0 or B == 0:
        c_n.copy_(c0)
        return
    new = functools.partial(torch.empty, dtype=xz.dtype, device=xz.device)
    sig, tan_s, c_tmp = new(B, m), new(B, s), new(B, d)
    fn, gemm = native.kernel("lstm_infer", dtype), native.blas_gemm(dtype)
    if fn is not None and gemm is not None:
        u = new(B, d) if fold else None  # x_t + h_{t-1}
        b = new(m).zero_() if bias is None else bias  # the C loop always adds a bias row
        fn(T, B, s, d - s, w, gemm, xz.data_ptr(), ph.data_ptr(), b.data_ptr(), h0.data_ptr(),
           c0.data_ptr(), out.data_ptr(), c_n.data_ptr(), c_tmp.data_ptr(), sig.data_ptr(),
           tan_s.data_ptr(), int(fold), None if u is None else u.data_ptr())  # fmt: skip
        return
    tan_g, tanh_c = new(B, d - s), new(B, d)
    # the same steps from Python: torch's GEMM, then the step operator (C or torch ops);
    # folded, x_t sits in out[t] until the step writes h_t there
    zs, outs = xz[:, :, :m].unbind(0), out.unbind(0)
    product = _recurrent_product(zs, ph.t(), s, out if fold else None, shared_unset=True)
    h, c = h0, c0
    for t in range(T):
        product(t, h)  # xz ends as on the C path: z_t without the bias
        z = zs[t].contiguous() if bias is None else zs[t] + bias
        c_new = c_n if (T - 1 - t) % 2 == 0 else c_tmp  # the last step writes c_n
        lstm_step(z, c, c_new, outs[t], sig, tan_s, tan_g, tanh_c, s)
        h, c = outs[t], c_new


# --- LSTM stack streaming step ----------------------------------------------------
def _stack_dims(op: str, x: Tensor, h0: Tensor, per_layer: dict[str, list]) -> tuple[int, int, int]:
    """``(L, B, d)`` of a stack operator's state h0 (L, B, d), once every per-layer
    list (named in the error) has L entries and x is (B, k)."""
    L, B, d = _dims(op, "h0", h0, 3)
    if any(len(v) != L for v in per_layer.values()):
        counts = [f"{len(v)} {name}" for name, v in per_layer.items()]
        raise KernelArgumentError(
            f"rrnn::{op}: {L} layers of state but {', '.join(counts[:-1])} and {counts[-1]}"
        )
    if x.dim() != 2 or x.shape[0] != B:
        raise KernelArgumentError(f"rrnn::{op}: x has shape {tuple(x.shape)}, expected ({B}, k)")
    return L, B, d


def _lstm_stream_args(x, h0, c0, weights, biases, shares, h_n, c_n, z, sig, tan_s, tan_g, tanh_c):
    lists = {"weights": weights, "biases": biases, "share counts": shares}
    L, B, d = _stack_dims("lstm_stream", x, h0, lists)
    m_max = max(s + 4 * (d - s) for s in shares)
    shapes = {"h0": (L, B, d), "c0": (L, B, d), "h_n": (L, B, d), "c_n": (L, B, d),
              "z": (B, m_max), "sig": (B, m_max), "tan_s": (B, d), "tan_g": (B, d),
              "tanh_c": (B, d)}  # fmt: skip
    tensors = {"x": x, "h0": h0, "c0": c0, "h_n": h_n, "c_n": c_n, "z": z, "sig": sig,
               "tan_s": tan_s, "tan_g": tan_g, "tanh_c": tanh_c}  # fmt: skip
    k = x.shape[1]
    for i, (w, b, s) in enumerate(zip(weights, biases, shares)):
        _check_s("lstm_stream", s, d)
        m = s + 4 * (d - s)
        tensors[f"weights[{i}]"] = w
        shapes[f"weights[{i}]"] = (m, k + d)
        if b is not None:
            tensors[f"biases[{i}]"] = b
            shapes[f"biases[{i}]"] = (m,)
        k = d
    return _check("lstm_stream", tensors, shapes)


def _stack_call(op: str, dtype, x: Tensor, h0: Tensor, shares):
    """What both stack operators hand to C: ``(fn, head, rows, each)``, where ``head``
    is ``(L, B, d, shares[], k[])`` (k: each layer's input width), ``rows(t)`` the
    pointers of an (L, B, d) tensor's layers and ``each(ts)`` those of a per-layer
    list (NULL for None)."""
    fn = native.kernel(op, dtype)
    if fn is None:
        raise KernelArgumentError(f"rrnn::{op} needs the compiled kernels (no compiler was found)")
    L, B, d = h0.shape
    ks = [x.shape[1]] + [d] * (L - 1)
    row = B * d * h0.element_size()
    ptrs = ctypes.c_void_p * L
    head = (L, B, d, (ctypes.c_int64 * L)(*shares), (ctypes.c_int64 * L)(*ks))

    def rows(t):
        return ptrs(*[t.data_ptr() + i * row for i in range(L)])

    def each(ts):
        return ptrs(*[0 if t is None else t.data_ptr() for t in ts])

    return fn, head, rows, each


def _lstm_stream_cpu(x, h0, c0, weights, biases, shares, h_n, c_n, z, sig, tan_s, tan_g, tanh_c):
    dtype = _lstm_stream_args(x, h0, c0, weights, biases, shares, h_n, c_n, z, sig, tan_s, tan_g, tanh_c)
    fn, head, rows, each = _stack_call("lstm_stream", dtype, x, h0, shares)
    fn(*head, each(weights), each(biases), x.data_ptr(), rows(h0), rows(c0), rows(h_n), rows(c_n),
       z.data_ptr(), sig.data_ptr(), tan_s.data_ptr(), tan_g.data_ptr(), tanh_c.data_ptr())  # fmt: skip


# --- GRU stack streaming step -----------------------------------------------------
def _gru_stream_args(x, h0, px, ph, bx, bh, shares, h_n, a, g, r, z, n, gn):
    lists = {"P_x": px, "P_h": ph, "b_x": bx, "b_h": bh, "share counts": shares}
    L, B, d = _stack_dims("gru_stream", x, h0, lists)
    m_max = max(s + 3 * (d - s) for s in shares)
    shapes = {"h0": (L, B, d), "h_n": (L, B, d), "a": (B, m_max), "g": (B, m_max),
              "r": (B, d), "z": (B, d), "n": (B, d), "gn": (B, d)}  # fmt: skip
    tensors = {"x": x, "h0": h0, "h_n": h_n, "a": a, "g": g, "r": r, "z": z, "n": n, "gn": gn}
    k = x.shape[1]
    for i, s in enumerate(shares):
        _check_s("gru_stream", s, d)
        m = s + 3 * (d - s)
        for name, t, shape in (("px", px[i], (m, k)), ("ph", ph[i], (m, d)),
                               ("bx", bx[i], (m,)), ("bh", bh[i], (m,))):  # fmt: skip
            if t is not None:
                tensors[f"{name}[{i}]"], shapes[f"{name}[{i}]"] = t, shape
        k = d
    return _check("gru_stream", tensors, shapes)


def _gru_stream_cpu(x, h0, px, ph, bx, bh, shares, h_n, a, g, r, z, n, gn):
    dtype = _gru_stream_args(x, h0, px, ph, bx, bh, shares, h_n, a, g, r, z, n, gn)
    fn, head, rows, each = _stack_call("gru_stream", dtype, x, h0, shares)
    fn(*head, each(px), each(ph), each(bx), each(bh), x.data_ptr(), rows(h0), rows(h_n),
       a.data_ptr(), g.data_ptr(), r.data_ptr(), z.data_ptr(), n.data_ptr(), gn.data_ptr())  # fmt: skip


# --- GRU layer, whole sequence -------------------------------------------------------
def _gru_seq_shapes(T, B, d, s):
    q = d - s
    m = s + 3 * q
    return m, {"a": (T, B, m), "h0": (B, d), "ph": (m, d), "bh": (m,), "out": (T, B, d),
               "r": (T, B, d), "z": (T, B, q), "n": (T, B, d), "gn": (T, B, d),
               "d_out": (T, B, d), "dh": (B, d), "da": (T, B, m), "dg": (T, B, m)}  # fmt: skip


def _gru_seq_cpu(a, h0, ph, bh, out, r, z, n, gn, s):
    dtype = _check_op("gru_seq", (a, h0, ph, bh, out, r, z, n, gn, s))
    T, B, w = a.shape  # w >= m: a's row stride
    m, d = ph.shape
    pht = ph.t().contiguous()  # (d, m)
    g = torch.empty(B, m, dtype=a.dtype, device=a.device)  # h_{t-1} P_h^T + b_h, per step
    outs = out.unbind(0)
    fn = native.kernel("gru_fwd_strided", dtype)
    at = None if fn is None else _Steps(a, out, r, z, n, gn).at
    a = a[:, :, :m]
    h = h0
    for t in range(T):
        if bh is None:
            torch.mm(h, pht, out=g)
        else:
            torch.addmm(bh, h, pht, out=g)
        if fn is None:
            gru_step_ops(a[t], g, h, outs[t], r[t], z[t], n[t], gn[t], s, d - s)
        else:
            a_t, h_t, r_t, z_t, n_t, gn_t = at(t)
            fn(B, s, d - s, w, a_t, g.data_ptr(), h.data_ptr(), h_t, r_t, z_t, n_t, gn_t)
        h = outs[t]


def _gru_seq_backward_cpu(ph, r, z, n, gn, h0, out, d_out, dh, da, dg, s):
    dtype = _check_op("gru_seq_backward", (ph, r, z, n, gn, h0, out, d_out, dh, da, dg, s))
    T, B, _ = r.shape
    d = dh.shape[1]
    direct = torch.empty_like(dh)  # the part of dh_{t-1} that does not pass through P_h
    fn = native.kernel("gru_bwd_out", dtype)
    at = None if fn is None else _Steps(r, z, n, gn, d_out, da, dg).at
    for t in range(T - 1, -1, -1):
        h_prev = out[t - 1] if t > 0 else h0
        if fn is None:
            dy = dh if d_out is None else dh.add_(d_out[t])
            gru_backward_ops(r[t], z[t], n[t], gn[t], h_prev, dy, da[t], dg[t], direct, s, d - s)
        else:
            r_t, z_t, n_t, gn_t, dy_out, da_t, dg_t = at(t)
            fn(B, s, d - s, r_t, z_t, n_t, gn_t, h_prev.data_ptr(), dh.data_ptr(), dy_out or None,
               da_t, dg_t, direct.data_ptr())  # fmt: skip
        torch.addmm(direct, dg[t], ph, out=dh)  # (B, d)


# --- softmax cross-entropy rows ---------------------------------------------------
def _softmax_xent_args(logits, target, bias, loss, dbias, scale):
    if logits.dim() != 2:
        raise KernelArgumentError(f"rrnn::softmax_xent_: logits must be (n, V), got {tuple(logits.shape)}")
    n, V = logits.shape
    if V == 0:
        raise KernelArgumentError("rrnn::softmax_xent_: logits have no columns")
    tensors = {"logits": logits}
    tensors.update({k: t for k, t in (("bias", bias), ("dbias", dbias)) if t is not None})
    dtype = _check("softmax_xent_", tensors, {"bias": (V,), "dbias": (V,)})
    for name, t, want in (("target", target, torch.long), ("loss", loss, torch.float64)):
        if t.dtype != want or tuple(t.shape) != (n,) or not t.is_contiguous():
            raise KernelArgumentError(
                f"rrnn::softmax_xent_: {name} must be contiguous {want} of shape ({n},), got "
                f"{t.dtype} {tuple(t.shape)}"
            )
        if t.device != logits.device:
            raise KernelArgumentError(f"rrnn::softmax_xent_: {name} is on {t.device}, logits on {logits.device}")
    return dtype


def _softmax_xent_cpu(logits, target, bias, loss, dbias, scale):
    dtype = _softmax_xent_args(logits, target, bias, loss, dbias, scale)
    n, V = logits.shape
    if n == 0:
        return
    # an index outside the row would be a write outside the block: checked here,
    # before any pointer, not only by the caller
    lo, hi = torch.aminmax(target)
    if lo.item() < 0 or hi.item() >= V:
        raise KernelArgumentError(f"rrnn::softmax_xent_: target holds a class outside [0, {V})")
    fn = native.kernel("xent", dtype)
    if fn is None:
        softmax_xent_ops(logits, target, bias, loss, dbias, scale)
        return
    ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
    fn(n, V, torch.get_num_threads(), logits.data_ptr(), target.data_ptr(), ptr(bias),
       float(scale), loss.data_ptr(), ptr(dbias))  # fmt: skip


# --- the operators, each described once ----------------------------------------------
@dataclass(frozen=True)
class _Op:
    """One operator: its schema (argument names, types, what it writes); where its
    sizes come from; the shapes of its tensors; and its CPU kernel: for a step
    operator the C function ``rrnn_<c_name>`` (``(B, s, q)``, then one pointer per
    tensor in schema order: ``tests/test_layout.py`` checks that against the C
    prototype) or, without the compiled library, ``fallback``; otherwise ``cpu``.
    ``check`` replaces the generic argument check where lists or scalars need
    their own. The Meta kernel is the check alone."""

    schema: str  # without the name: "(Tensor z, ...) -> ()"
    state: str = ""  # the (B, d) argument that gives B and d
    lead: str = ""  # sequence operators: the (T, B, .) argument that gives T
    shapes: Callable | None = None  # (T, B, d, s) -> {argument: shape}
    lead_shape: str = "(T, B, m)"
    c_name: str = ""
    fallback: Callable | None = None
    cpu: Callable | None = None
    check: Callable | None = None
    wide: bool = False  # ``lead``'s last dimension may exceed m: shapes(T, B, d, s, w)


@functools.cache
def _arg_names(op: str) -> tuple[str, ...]:
    return tuple(a.name for a in getattr(torch.ops.rrnn, op).default._schema.arguments)


def _check_op(op: str, args: tuple) -> torch.dtype:
    """The checks of ``rrnn::<op>`` before any pointer: names from the schema,
    sizes from the table's ``state`` (and ``lead``) argument, then ``s`` and every
    tensor given (None: an optional argument left out) against its shape."""
    spec = OPS[op]
    if spec.check is not None:
        return spec.check(*args)
    named = dict(zip(_arg_names(op), args))
    s = named.pop("s")
    named.pop("fold", None)  # lstm_seq_infer's flag: no tensor
    if spec.lead:
        seq, st = named[spec.lead], named[spec.state]
        if seq.dim() != 3 or st.dim() != 2:
            raise KernelArgumentError(
                f"rrnn::{op}: {spec.lead} must be {spec.lead_shape} and {spec.state} (B, d), "
                f"got {tuple(seq.shape)} and {tuple(st.shape)}"
            )
        (T, B, w), d = seq.shape, st.shape[1]
    else:
        T, (B, d) = None, _dims(op, spec.state, named[spec.state], 2)
    _check_s(op, s, d)
    shapes = spec.shapes(T, B, d, s, w) if spec.wide else spec.shapes(T, B, d, s)
    return _check(op, {k: t for k, t in named.items() if t is not None}, shapes)


def _step_kernel(op: str):
    """The CPU kernel of a step operator (see :class:`_Op`)."""
    spec = OPS[op]
    state = _arg_names(op).index(spec.state)

    def cpu(*args):
        *tensors, s = args
        dtype = _check_op(op, args)
        B, d = tensors[state].shape
        fn = native.kernel(spec.c_name, dtype)
        if fn is None:
            spec.fallback(*tensors, s, d - s)
            return
        fn(B, s, d - s, *(t.data_ptr() for t in tensors))

    return cpu


def _meta(op: str):
    return lambda *args: (_check_op(op, args), None)[1]


_SEQ = lambda T, B, d, s: _seq_shapes(T, B, d, s)[1]  # noqa: E731


def _wide(base: Callable, *names: str) -> Callable:
    """``base``'s shapes, with the last dimension of ``names`` the row stride w >= m
    the call's lead argument has (see padded_width): ``(T, B, d, s, w) -> shapes``."""

    def shapes(T, B, d, s, w):
        m, table = base(T, B, d, s)
        w = max(w, m)  # narrower: the check reports the expected width m
        return {**table, **{n: (*table[n][:-1], w) for n in names}}

    return shapes


_GRU_SEQ = lambda T, B, d, s: _gru_seq_shapes(T, B, d, s)[1]  # noqa: E731
OPS: dict[str, _Op] = {
    "lstm_step": _Op(
        "(Tensor z, Tensor c_prev, Tensor(a!) c, Tensor(b!) h, Tensor(c!) sig, "
        "Tensor(d!) tan_s, Tensor(e!) tan_g, Tensor(f!) tanh_c, int s) -> ()",
        state="c_prev", shapes=_lstm_step_shapes, c_name="lstm_fwd", fallback=lstm_step_ops),
    "lstm_step_backward": _Op(
        "(Tensor sig, Tensor tan_s, Tensor tan_g, Tensor tanh_c, Tensor c_prev, "
        "Tensor dh, Tensor dc, Tensor(a!) dz, Tensor(b!) dc_prev, int s) -> ()",
        state="c_prev", shapes=_lstm_step_shapes, c_name="lstm_bwd", fallback=lstm_backward_ops),
    "gru_step": _Op(
        "(Tensor a, Tensor g, Tensor h, Tensor(a!) h_new, Tensor(b!) r, Tensor(c!) z, "
        "Tensor(d!) n, Tensor(e!) gn, int s) -> ()",
        state="h", shapes=_gru_step_shapes, c_name="gru_fwd", fallback=gru_step_ops),
    "gru_step_backward": _Op(
        "(Tensor r, Tensor z, Tensor n, Tensor gn, Tensor h_prev, Tensor dh, "
        "Tensor(a!) da, Tensor(b!) dg, Tensor(c!) dh_direct, int s) -> ()",
        state="h_prev", shapes=_gru_step_shapes, c_name="gru_bwd", fallback=gru_backward_ops),
    "lstm_stream": _Op(
        "(Tensor x, Tensor h0, Tensor c0, Tensor[] weights, Tensor?[] biases, "
        "int[] shares, Tensor(a!) h_n, Tensor(b!) c_n, Tensor(c!) z, Tensor(d!) sig, "
        "Tensor(e!) tan_s, Tensor(f!) tan_g, Tensor(g!) tanh_c) -> ()",
        cpu=_lstm_stream_cpu, check=_lstm_stream_args),
    "gru_stream": _Op(
        "(Tensor x, Tensor h0, Tensor[] px, Tensor[] ph, Tensor?[] bx, Tensor?[] bh, "
        "int[] shares, Tensor(a!) h_n, Tensor(b!) a, Tensor(c!) g, Tensor(d!) r, "
        "Tensor(e!) z, Tensor(f!) n, Tensor(g!) gn) -> ()",
        cpu=_gru_stream_cpu, check=_gru_stream_args),
    "lstm_seq": _Op(
        "(Tensor(a!) xz, Tensor h0, Tensor ph, Tensor(b!) cs, Tensor(c!) out, "
        "Tensor(d!) sig, Tensor(e!) tan_s, Tensor(f!) tan_g, Tensor(g!) tanh_c, int s, "
        "Tensor? x=None) -> ()",
        state="h0", lead="xz", shapes=_wide(_seq_shapes, "xz"), wide=True, cpu=_lstm_seq_cpu),
    "lstm_seq_backward": _Op(
        "(Tensor ph, Tensor sig, Tensor tan_s, Tensor tan_g, Tensor tanh_c, "
        "Tensor cs, Tensor? d_out, Tensor(a!) dh, Tensor(b!) dc, Tensor(c!) dz, int s, "
        "Tensor(d!)? g=None) -> ()",
        state="dh", lead="sig", shapes=_SEQ, cpu=_lstm_seq_backward_cpu),
    "lstm_seq_infer": _Op(
        "(Tensor(a!) xz, Tensor h0, Tensor c0, Tensor ph, Tensor? bias, Tensor(b!) out, "
        "Tensor(c!) c_n, int s, bool fold=False) -> ()",
        state="h0", lead="xz", shapes=_wide(_seq_shapes, "xz"), wide=True,
        cpu=_lstm_seq_infer_cpu),
    "gru_seq": _Op(
        "(Tensor a, Tensor h0, Tensor ph, Tensor? bh, Tensor(a!) out, Tensor(b!) r, "
        "Tensor(c!) z, Tensor(d!) n, Tensor(e!) gn, int s) -> ()",
        state="h0", lead="a", shapes=_wide(_gru_seq_shapes, "a"), wide=True, cpu=_gru_seq_cpu),
    "gru_seq_backward": _Op(
        "(Tensor ph, Tensor r, Tensor z, Tensor n, Tensor gn, Tensor h0, "
        "Tensor out, Tensor? d_out, Tensor(a!) dh, Tensor(b!) da, Tensor(c!) dg, int s) -> ()",
        state="dh", lead="r", shapes=_GRU_SEQ, lead_shape="(T, B, d)", cpu=_gru_seq_backward_cpu),
    "softmax_xent_": _Op(
        "(Tensor(a!) logits, Tensor target, Tensor? bias, Tensor(b!) loss, "
        "Tensor(c!)? dbias, float scale) -> ()",
        cpu=_softmax_xent_cpu, check=_softmax_xent_args),
}  # fmt: skip

for _name, _spec in OPS.items():
    _lib.define(_name + _spec.schema)
    _lib.impl(_name, _spec.cpu or _step_kernel(_name), "CPU")
    _lib.impl(_name, _meta(_name), "Meta")

lstm_step = torch.ops.rrnn.lstm_step.default
lstm_step_backward = torch.ops.rrnn.lstm_step_backward.default
gru_step = torch.ops.rrnn.gru_step.default
gru_step_backward = torch.ops.rrnn.gru_step_backward.default
lstm_seq = torch.ops.rrnn.lstm_seq.default
lstm_seq_backward = torch.ops.rrnn.lstm_seq_backward.default
lstm_seq_infer = torch.ops.rrnn.lstm_seq_infer.default
gru_seq = torch.ops.rrnn.gru_seq.default
gru_seq_backward = torch.ops.rrnn.gru_seq_backward.default
lstm_stream = torch.ops.rrnn.lstm_stream.default
gru_stream = torch.ops.rrnn.gru_stream.default
softmax_xent_ = torch.ops.rrnn.softmax_xent_.default
