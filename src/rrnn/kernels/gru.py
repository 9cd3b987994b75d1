"""Shared-row GRU: one layer, one direction, computed on the packed rows.

Gate order (r, z, n) as torch.nn. With a uniform sharing rate the ``s``
shared rows open all three gates of both inputs, so per input the layer needs
``m = s + 3q`` rows (``q = d - s``) instead of ``3d``. Packed::

    P_x (m, k_x) = [shared rows; private x rows of r, z, n]     b_x (m,) likewise
    P_h (m, d)   = [shared rows; private h rows of r, z, n]     b_h (m,) likewise

``a = x P_x^T + b_x`` and ``g = h P_h^T + b_h`` stay apart, because the n gate
reads ``r * g_n``. On the shared columns r and z are the same,
``u = sigmoid(a_S + g_S)``::

    h'[:s] = (1 - u) * tanh(a_S + u * g_S) + u * h[:s]
    h'[s:] = (1 - z) * tanh(a_N + r * g_N) + z * h[s:],  r = sigmoid(a_R + g_R), z = sigmoid(a_Z + g_Z)
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import ops


class SharedRowGRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        h0: Tensor,
        px: Tensor,
        ph: Tensor,
        bx: Tensor | None,
        bh: Tensor | None,
        s: int,
    ):
        T, B, k = x.shape
        m, d = ph.shape
        q = d - s
        x2 = x.reshape(T * B, k)  # (T*B, k)
        a_all = ops.padded_empty(x, T, B, m=m)  # rows of a multiple of 16 values
        a_m = a_all.view(T * B, -1)[:, :m]  # (T*B, m), the columns the step reads
        if bx is None:
            torch.mm(x2, px.t(), out=a_m)
        else:
            torch.addmm(bx, x2, px.t(), out=a_m)
        r_buf = x.new_empty(T, B, d)
        z_buf = x.new_empty(T, B, q)
        n_buf = x.new_empty(T, B, d)
        gn = x.new_empty(T, B, d)
        out = x.new_empty(T, B, d)  # h_1 .. h_T
        h0 = h0.contiguous()
        ops.gru_seq(a_all, h0, ph.contiguous(), bh, out, r_buf, z_buf, n_buf, gn, s)
        ctx.s = s
        ctx.has_bias = bx is not None
        ctx.save_for_backward(x, h0, px, ph, r_buf, z_buf, n_buf, gn, out)
        return out, out[T - 1].clone()

    @staticmethod
    @once_differentiable  # a second derivative raises instead of being silently wrong
    def backward(ctx, d_out, d_hT):
        x, h0, px, ph, r_buf, z_buf, n_buf, gn, out = ctx.saved_tensors
        s = ctx.s
        T, B, k = x.shape
        m, d = ph.shape
        da_all = x.new_empty(T, B, m)
        dg_all = x.new_empty(T, B, m)
        dh = x.new_zeros(B, d) if d_hT is None else d_hT.contiguous().clone()  # becomes dh0
        d_out = None if d_out is None else d_out.contiguous()
        ops.gru_seq_backward(ph.contiguous(), r_buf, z_buf, n_buf, gn, h0, out, d_out, dh, da_all, dg_all, s)
        da2, dg2 = da_all.view(T * B, m), dg_all.view(T * B, m)
        dx = torch.mm(da2, px).view(T, B, k) if ctx.needs_input_grad[0] else None
        dpx = torch.mm(da2.t(), x.reshape(T * B, k)) if ctx.needs_input_grad[2] else None
        dph = None
        if ctx.needs_input_grad[3]:
            dph = torch.mm(dg_all[0].t(), h0)  # (m, d): step 0 reads h0, step t reads h_t-1
            if T > 1:
                dph.addmm_(dg2[B:].t(), out[:-1].reshape((T - 1) * B, d))
        dbx = da2.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
        dbh = dg2.sum(0) if ctx.has_bias and ctx.needs_input_grad[5] else None
        return dx, (dh if ctx.needs_input_grad[1] else None), dpx, dph, dbx, dbh, None


def gru_step(
    x: Tensor,
    h: Tensor,
    px: Tensor,
    ph: Tensor,
    bx: Tensor | None,
    bh: Tensor | None,
    s: int,
    h_new: Tensor,
    scratch: tuple[Tensor, ...],
) -> None:
    """One inference step (call under no_grad); writes h_new (B, d)."""
    h = h.contiguous()
    if x.shape[0] == 1:  # matrix-vector products
        a = (torch.mv(px, x[0]) if bx is None else torch.addmv(bx, px, x[0]))[None]
        g = (torch.mv(ph, h[0]) if bh is None else torch.addmv(bh, ph, h[0]))[None]
    else:
        a = torch.mm(x, px.t()) if bx is None else torch.addmm(bx, x, px.t())
        g = torch.mm(h, ph.t()) if bh is None else torch.addmm(bh, h, ph.t())
    r_buf, z_buf, n_buf, gn = scratch
    ops.gru_step(a.contiguous(), g.contiguous(), h, h_new, r_buf, z_buf, n_buf, gn, s)
