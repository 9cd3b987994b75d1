"""Shared-row LSTM: one layer, one direction, computed on the packed rows.

With a uniform sharing rate, the ``s`` shared rows are the first rows of all
four gates of both inputs, so per input the layer needs ``m = s + 4q`` rows
of work (``q = d - s``) instead of ``4d``. Packed matrices::

    P_x  (m, k_x) = [shared rows (first k_x columns); private x rows of i, f, g, o]
    P_h  (m, d)   = [shared rows (first d columns);   private h rows of i, f, g, o]
    b_x, b_h (m,) = packed biases; the kernel adds them (a shared entry counts twice)

Pre-activations ``z = x P_x^T + h P_h^T + bias`` have columns
``[S | P_i | P_f | P_g | P_o]`` (widths s, q, q, q, q). Every gate reads S
in its first s columns, so on those columns ``i = f = o = sigmoid(S)`` and
``g = tanh(S)``::

    c'[:s] = sigmoid(S) * (c[:s] + tanh(S))        h'[:s] = sigmoid(S) * tanh(c'[:s])
    c'[s:] = sigmoid(P_f) * c[s:] + sigmoid(P_i) * tanh(P_g)
    h'[s:] = sigmoid(P_o) * tanh(c'[s:])

Forward: the input projection of all steps is one GEMM, then one GEMM on h
per step and the fused step (the time loop is one operator, ``rrnn::lstm_seq``).
Without autograd (:func:`lstm_infer`) the time loop, its GEMM included, runs in
C and keeps only one step's activations.
Backward: one GEMM per step for dh (``rrnn::lstm_seq_backward``); the weight
gradients and the input gradient for all steps are three GEMMs after the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import ops


def folds(k: int, d: int, s: int) -> bool:
    """Whether a layer computes its shared rows as ``(x_t + h) S^T``: where x is as
    wide as h (k = d), x and h read the same s shared rows S, and one product does
    the work of ``x_t S^T + h S^T`` (see :func:`lstm_infer`)."""
    return k == d and s > 0


def folds_in_training(k: int, d: int, s: int) -> bool:
    """:func:`folds`, where the training path gains by it: at least twice as many
    shared rows as private ones per gate (r >= 2/3). There the step's extra products
    (x_t + h, and the shared and private columns apart) cost less than the saved
    columns of the input projection and of one weight gradient; at r = 0.5 `rrnn
    bench` measured training 2% slower folded, at r = 0.9 12% faster
    (docs/benchmarks.md, "Folding the shared rows")."""
    return folds(k, d, s) and s >= 2 * (d - s)


class SharedRowLSTMFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        px: Tensor,
        ph: Tensor,
        bx: Tensor | None,
        bh: Tensor | None,
        s: int,
    ):
        # b_x and b_h come in apart and get gradient tensors of their own: one tensor
        # for both reaches the two parameters as views of one buffer, which
        # AccumulateGrad may keep as .grad, so a second backward would add twice.
        bias = None if bx is None else bx + bh  # a shared bias row counts twice
        T, B, k = x.shape
        m, d = ph.shape
        q = d - s
        fold = folds_in_training(k, d, s)  # the shared rows as (x_t + h) S^T
        x2 = x.reshape(T * B, k)  # (T*B, k)
        a = s if fold else 0  # the input projection's first column: the private ones only
        xz = projection_rows(x, T, B, m, a)  # (T, B, w): rows of w >= m values
        xzm = xz.view(T * B, -1)[:, :m]  # (T*B, m), row stride w
        if bias is None:
            torch.mm(x2, px[a:].t(), out=xzm[:, a:])
        else:
            torch.addmm(bias[a:], x2, px[a:].t(), out=xzm[:, a:])
        if fold:
            xzm[:, :s] = 0 if bias is None else bias[:s]  # each step adds (x_t + h) S^T
        # xz: (T, B, w); its first m columns become the pre-activations z_t step by step
        sig = x.new_empty(T, B, m)  # sigmoid of every packed column
        tan_s = x.new_empty(T, B, s)  # tanh(S)
        tan_g = x.new_empty(T, B, q)  # tanh(P_g)
        cs = x.new_empty(T + 1, B, d)  # cell states, cs[0] = c0
        tc = x.new_empty(T, B, d)  # tanh(c_t)
        out = x.new_empty(T, B, d)  # h_1 .. h_T
        cs[0] = c0
        x_in = x.contiguous() if fold else None
        ops.lstm_seq(xz, h0.contiguous(), ph.contiguous(), cs, out, sig, tan_s, tan_g, tc, s, x_in)
        ctx.s = s
        ctx.fold = fold
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, h0, px, ph, sig, tan_s, tan_g, cs, tc, out)
        return out, out[T - 1].clone(), cs[T].clone()

    @staticmethod
    @once_differentiable  # a second derivative raises instead of being silently wrong
    def backward(ctx, d_out, d_hT, d_cT):
        x, h0, px, ph, sig, tan_s, tan_g, cs, tc, out = ctx.saved_tensors
        s = ctx.s
        T, B, k = x.shape
        m, d = ph.shape
        dz_all = x.new_empty(T, B, m)  # gradient of the packed pre-activations
        dh = x.new_zeros(B, d) if d_hT is None else d_hT.contiguous().clone()  # becomes dh0
        dc = x.new_zeros(B, d) if d_cT is None else d_cT.contiguous().clone()  # becomes dc0
        d_out = None if d_out is None else d_out.contiguous()
        # folded, x_t read the shared rows as h_{t-1} did: dx takes dh's dz_S S (g)
        g = x.new_empty(T, B, d) if ctx.fold and ctx.needs_input_grad[0] else None
        ops.lstm_seq_backward(ph.contiguous(), sig, tan_s, tan_g, tc, cs, d_out, dh, dc, dz_all, s, g)
        dz2 = dz_all.view(T * B, m)  # (T*B, m)
        dx = None
        if g is not None:  # dx = dz_S S + dz_P P_xp
            dx = torch.addmm(g.view(T * B, d), dz2[:, s:], px[s:]).view(T, B, k)
        elif ctx.needs_input_grad[0]:
            dx = torch.mm(dz2, px).view(T, B, k)
        if ctx.fold and ctx.needs_input_grad[3] and ctx.needs_input_grad[4]:
            dpx, dph = _folded_weight_grads(dz_all, x, h0, out, s)
        else:
            dpx, dph = _weight_grads(dz_all, x, h0, out, ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        dbias = dz2.sum(0) if ctx.has_bias else None
        dbx = dbias if ctx.has_bias and ctx.needs_input_grad[5] else None
        dbh = dbias.clone() if ctx.has_bias and ctx.needs_input_grad[6] else None
        dh0 = dh if ctx.needs_input_grad[1] else None
        dc0 = dc if ctx.needs_input_grad[2] else None
        return dx, dh0, dc0, dpx, dph, dbx, dbh, None


def projection_rows(x: Tensor, T: int, B: int, m: int, a: int, buffer: Tensor | None = None) -> Tensor:
    """x P_x^T's rows, (T, B, padded_width(m)), in ``buffer`` (flat, at least
    :func:`infer_buffer_size` elements; a new one where None or smaller), placed so
    that column ``a``, where the input projection starts writing, is 64-byte aligned
    (MKL's SGEMM measured 4.67 against 5.08 ms into an unaligned column s = 100).
    The padding columns are zeros: never read, defined all the same (ops.padded_empty)."""
    w, off = ops.padded_width(m), -a % 16
    if buffer is None or buffer.numel() < infer_buffer_size(T, B, m):
        buffer = x.new_empty(infer_buffer_size(T, B, m))
    xz = buffer[off : off + T * B * w].view(T, B, w)
    if w > m:
        xz[..., m:].zero_()
    return xz


def _x_plus_h_prev(x: Tensor, h0: Tensor, out: Tensor) -> Tensor:
    """(T*B, d): x_t + h_{t-1} for every step, h_0 = h0."""
    T, B, d = out.shape
    u = x.clone(memory_format=torch.contiguous_format)
    u[0] += h0
    u[1:] += out[:-1]
    return u.view(T * B, d)


def _dz_h_prev(dz: Tensor, h0: Tensor, out: Tensor, into: Tensor | None = None) -> Tensor:
    """dz^T h_prev, (n, d) for dz (T, B, n) (a column slice of dz_all is fine): step 0
    reads h0, step t reads h_{t-1} = out[t-1]. Written into ``into`` where given."""
    T, B, n = dz.shape
    d = out.shape[2]
    res = torch.mm(dz[0].t(), h0, out=into) if into is not None else torch.mm(dz[0].t(), h0)
    if T > 1:
        res.addmm_(dz[1:].reshape((T - 1) * B, n).t(), out[:-1].reshape((T - 1) * B, d))
    return res


def _weight_grads(dz_all: Tensor, x: Tensor, h0: Tensor, out: Tensor, want_x: bool, want_h: bool):
    """dP_x = dz^T x and dP_h = dz^T h_prev (each None where not wanted)."""
    T, B, m = dz_all.shape
    dpx = torch.mm(dz_all.view(T * B, m).t(), x.reshape(T * B, -1)) if want_x else None
    return dpx, _dz_h_prev(dz_all, h0, out) if want_h else None


def _folded_weight_grads(dz_all: Tensor, x: Tensor, h0: Tensor, out: Tensor, s: int):
    """The weight gradients of a folded layer: the shared rows were read as
    (x_t + h_{t-1}) S^T, so their gradient is one product, dz_S^T (x + h_prev),
    returned in dP_x's shared rows (dP_h's are zero: P_x and P_h are both made from
    the same S, and autograd adds the two). The private rows as before."""
    T, B, m = dz_all.shape
    d = out.shape[2]
    dz2 = dz_all.view(T * B, m)  # (T*B, m)
    dpx = torch.empty(m, d, dtype=x.dtype, device=x.device)
    torch.mm(dz2[:, :s].t(), _x_plus_h_prev(x, h0, out), out=dpx[:s])
    torch.mm(dz2[:, s:].t(), x.reshape(T * B, d), out=dpx[s:])
    dph = torch.zeros_like(dpx)
    _dz_h_prev(dz_all[..., s:], h0, out, into=dph[s:])
    return dpx, dph


def lstm_infer(x: Tensor, h0: Tensor, c0: Tensor, px: Tensor, ph: Tensor,
               bx: Tensor | None, bh: Tensor | None, s: int, *,
               out: Tensor | None = None, xz: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One layer over a sequence without autograd (call where no input needs a
    gradient): x (T, B, k_x), h0 and c0 (B, d); returns out (T, B, d), h_T, c_T.
    The input projection of all steps is one GEMM, without the bias (addmm would
    first copy it into all T*B rows); the bias is added in the fused step, and the
    time loop with its recurrent GEMM runs in C (``rrnn::lstm_seq_infer``), keeping
    one step's activations instead of the T steps' that backward would need. Both
    GEMMs write rows of :func:`.ops.padded_width` values, of which the first m are used.

    Where x is as wide as h (k_x = d: every layer after the first, and the first
    when input_size = hidden_size) the two inputs read the same s shared rows S, and
    ``x_t S^T + h S^T = (x_t + h) S^T``: the input projection then covers only the
    4q private columns, and each step computes the shared ones from x_t + h_{t-1}
    (the operator's ``fold``): 2m - s rows of products per token instead of 2m (at
    r = 0.9, H = 200: 340 instead of 520; docs/benchmarks.md). The sums round
    differently from the training path's, within float rounding.

    ``out``: where to write the outputs, contiguous (T, B, d); it may be ``x``
    itself (x P_x^T is taken before any output is written, and with ``fold`` the
    operator reads x_t there before writing h_t). ``xz``: a contiguous buffer of at
    least :func:`infer_buffer_size` elements for x P_x^T, which the layers of one
    call can share. Both serve to allocate less fresh memory per call (see
    docs/kernels.md)."""
    T, B, k = x.shape
    m, d = ph.shape
    w = ops.padded_width(m)
    fold = folds(k, d, s)
    xz = projection_rows(x, T, B, m, s if fold else 0, xz)  # (T, B, w)
    x2 = x.reshape(T * B, k)  # (T*B, k)
    if fold:
        torch.mm(x2, px[s:].t(), out=xz.view(T * B, w)[:, s:m])  # x_t P_xp^T, private rows
        if out is None:
            out = x.clone(memory_format=torch.contiguous_format)  # the operator reads x_t here
        elif out.data_ptr() != x.data_ptr():
            out.copy_(x)
    else:
        torch.mm(x2, px.t(), out=xz.view(T * B, w)[:, :m])  # x_t P_x^T
        out = x.new_empty(T, B, d) if out is None else out  # h_1 .. h_T
    bias = None if bx is None else bx + bh  # a shared bias row counts twice
    c_n = x.new_empty(B, d)
    ops.lstm_seq_infer(xz, h0.contiguous(), c0.contiguous(), ph.contiguous(), bias, out, c_n, s, fold)
    return out, out[T - 1].clone(), c_n


def infer_buffer_size(T: int, B: int, m: int) -> int:
    """Elements of the x P_x^T buffer :func:`lstm_infer` needs: T*B rows of
    padded_width(m) values, plus up to 15 to align the rows' column s."""
    return T * B * ops.padded_width(m) + 15


def lstm_step(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    p_xh: Tensor,
    bias: Tensor | None,
    s: int,
    h_new: Tensor,
    c_new: Tensor,
    scratch: tuple[Tensor, ...],
) -> None:
    """One time step for inference (call under no_grad): ``p_xh`` = ``[P_x | P_h]``
    of shape ``(m, k_x + d)``; x (B, k_x); h, c (B, d). Writes h_new, c_new
    (contiguous (B, d)); ``scratch`` = (sig, tanh_s, tanh_g, tanh_c) buffers."""
    xh = torch.cat([x, h], 1)  # (B, k_x + d)
    if xh.shape[0] == 1:  # a matrix-vector product is cheaper than a 1-row GEMM
        z = (torch.mv(p_xh, xh[0]) if bias is None else torch.addmv(bias, p_xh, xh[0]))[None]
    else:
        z = torch.mm(xh, p_xh.t()) if bias is None else torch.addmm(bias, xh, p_xh.t())  # (B, m)
    c = c.contiguous()
    sig, tan_s, tan_g, tc = scratch
    ops.lstm_step(z.contiguous(), c, c_new, h_new, sig, tan_s, tan_g, tc, s)
