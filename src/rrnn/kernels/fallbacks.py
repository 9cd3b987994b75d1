"""Torch-op versions of the LSTM and GRU step operators, used where no C compiler
was found (same arithmetic as ``rrnn_lstm_*`` / ``rrnn_gru_*`` in ``cells.c``, on
the packed columns that :mod:`.lstm` and :mod:`.gru` describe). Each takes the
operator's tensors, then ``s`` and ``q = d - s``, and writes what the operator's
schema marks as written, nothing else.

Imports nothing of rrnn: :mod:`.ops` registers these as the operators' fallbacks.
"""

from __future__ import annotations

import torch


def lstm_step_ops(z, c_prev, c, h, sig, tan_s, tan_g, tc, s: int, q: int) -> None:
    """``rrnn::lstm_step``: the fused LSTM forward step (columns as in :mod:`.lstm`)."""
    i0, f0, g0, o0 = s, s + q, s + 2 * q, s + 3 * q  # column starts of P_i, P_f, P_g, P_o
    sg = torch.sigmoid(z, out=sig)
    ts = torch.tanh(z[:, :s], out=tan_s)
    tg = torch.tanh(z[:, g0:o0], out=tan_g)
    torch.add(c_prev[:, :s], ts, out=c[:, :s]).mul_(sg[:, :s])
    torch.mul(sg[:, f0:g0], c_prev[:, s:], out=c[:, s:]).addcmul_(sg[:, i0:f0], tg)
    th = torch.tanh(c, out=tc)
    torch.mul(sg[:, :s], th[:, :s], out=h[:, :s])
    torch.mul(sg[:, o0:], th[:, s:], out=h[:, s:])


def lstm_backward_ops(sg, ts, tg, th, c_prev, dh, dc, dz, dc_prev, s: int, q: int) -> None:
    """``rrnn::lstm_step_backward``: fills ``dz`` (B, m) and
    ``dc_prev`` (B, d) from dh and dc (B, d), which it only reads, as the C kernel
    does (the operator's contract: callers may reuse dh and dc)."""
    i0, f0, g0, o0 = s, s + q, s + 2 * q, s + 3 * q
    dsg = torch.addcmul(sg, sg, sg, value=-1.0)  # sigmoid' = s (1 - s), (B, m)
    # dc_total = dc + dh * o * (1 - tanh(c)^2); o = [sig(S) | sig(P_o)]
    u = torch.addcmul(torch.ones_like(th), th, th, value=-1.0).mul_(dh)
    dct = dc.clone()
    dct[:, :s].addcmul_(u[:, :s], sg[:, :s])
    dct[:, s:].addcmul_(u[:, s:], sg[:, o0:])
    do = dh * th
    # shared columns: S feeds i, f, o (sigmoid) and g (tanh)
    dct_s, dct_p = dct[:, :s], dct[:, s:]
    a = torch.add(c_prev[:, :s], ts).mul_(dct_s).add_(do[:, :s])
    torch.mul(a, dsg[:, :s], out=dz[:, :s])
    ds = dct_s * sg[:, :s]  # also the shared part of dc_prev
    dz[:, :s].addcmul_(ds, 1.0 - ts * ts)
    # private columns
    torch.mul(dct_p, tg, out=dz[:, i0:f0]).mul_(dsg[:, i0:f0])
    torch.mul(dct_p, c_prev[:, s:], out=dz[:, f0:g0]).mul_(dsg[:, f0:g0])
    torch.mul(dct_p, sg[:, i0:f0], out=dz[:, g0:o0]).mul_(1.0 - tg * tg)
    torch.mul(do[:, s:], dsg[:, o0:], out=dz[:, o0:])
    dc_prev[:, :s] = ds
    torch.mul(dct_p, sg[:, f0:g0], out=dc_prev[:, s:])


def gru_step_ops(a, g, h_prev, h, r_out, z_out, n_out, gn, s: int, q: int) -> None:
    """``rrnn::gru_step``: the fused GRU forward step (columns as in :mod:`.gru`)."""
    r0, z0, n0 = s, s + q, s + 2 * q
    u = torch.sigmoid(a[:, :s] + g[:, :s])
    r = torch.sigmoid(a[:, r0:z0] + g[:, r0:z0])
    z = torch.sigmoid(a[:, z0:n0] + g[:, z0:n0])
    r_out[:, :s], r_out[:, s:], z_out[:] = u, r, z
    gn[:, :s], gn[:, s:] = g[:, :s], g[:, n0:]
    torch.tanh(torch.addcmul(a[:, :s], u, g[:, :s]), out=n_out[:, :s])
    torch.tanh(torch.addcmul(a[:, n0:], r, g[:, n0:]), out=n_out[:, s:])
    gate = torch.cat([u, z], 1)  # (B, d): the update gate of every column
    torch.add(n_out, gate * (h_prev - n_out), out=h)


def gru_backward_ops(r_out, z_out, n_out, gn, h_prev, dh, da, dg, dh_direct, s: int, q: int) -> None:
    """``rrnn::gru_step_backward``: the fused GRU backward step."""
    r0, z0, n0 = s, s + q, s + 2 * q
    gate = torch.cat([r_out[:, :s], z_out], 1)  # update gate per column, (B, d)
    dpn = dh * (1 - gate) * (1 - n_out * n_out)  # d pre-activation of n, (B, d)
    dgate = dh * (h_prev - n_out)
    u = r_out[:, :s]
    dpu = (dgate[:, :s] + dpn[:, :s] * gn[:, :s]) * u * (1 - u)
    da[:, :s] = dpn[:, :s] + dpu
    dg[:, :s] = dpn[:, :s] * u + dpu
    r = r_out[:, s:]
    dpr = dpn[:, s:] * gn[:, s:] * r * (1 - r)
    z = z_out
    dpz = dgate[:, s:] * z * (1 - z)
    da[:, r0:z0], dg[:, r0:z0] = dpr, dpr
    da[:, z0:n0], dg[:, z0:n0] = dpz, dpz
    da[:, n0:] = dpn[:, s:]
    dg[:, n0:] = dpn[:, s:] * r
    torch.mul(dh, gate, out=dh_direct)
