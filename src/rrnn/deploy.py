"""Inference forms of the restricted layers, for export: the compression kept.

A restricted layer computes, per layer, only its distinct gate rows: the ``s``
shared rows (one block ``S``, read by x and h alike) and the ``q = d - s`` private
rows of each gate. :func:`compact` turns a trained ``RestrictedRNN/GRU/LSTM`` (a
uniform sharing rate per layer, unidirectional) into a :class:`CompactRNN` that
holds exactly those blocks as buffers, each stored once and contiguous, and runs
them with plain matrix products and element-wise ops: nothing slices,
concatenates or gathers a weight, so an exporter (``torch.onnx.export``,
``torch.export``) records the compact blocks as constants and a runtime's
optimiser has nothing to fold back to full size.

Because every gate reads the same shared rows from x and from h, the LSTM's and
the RNN's shared pre-activations are ``(x + h) S^T`` (x and h padded to S's
width): one product where torch.nn, and the layer's training path, compute two.
The GRU keeps the two apart, as ``n = tanh(a_n + r * g_n)`` needs them.

Shapes (layer l, k = its input size, d = hidden size, n = 4, 3, 1 gates):

=======================  ==========================================================
``shared_l{l}``          ``(s, max(k, d))``: the shared rows
``bias_shared_l{l}``     ``(s,)``; LSTM/RNN: twice the shared bias (x's and h's)
``weight_l{l}``          LSTM/RNN ``(n*q, k + d)``: ``[x's | h's]`` private rows, gate
                         after gate (torch.nn's order: i f g o; one)
``weight_ih_l{l}``       GRU ``(3q, k)``: x's private rows (r z n)
``weight_hh_l{l}``       GRU ``(3q, d)``: h's private rows
``bias_ih_l{l}``         ``(n*q,)``; LSTM/RNN: x's and h's private biases summed
``bias_hh_l{l}``         ``(n*q,)``; GRU only (h's private bias)
=======================  ==========================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CompactRNN", "compact"]


def compact(layer: nn.Module) -> CompactRNN:
    """The export form of a restricted layer (copies of its weights, eval only)."""
    from . import kernels
    from .modules import RestrictedRNNBase

    if not isinstance(layer, RestrictedRNNBase):
        raise TypeError(f"compact() takes a RestrictedRNN/GRU/LSTM, got {type(layer).__name__}")
    if layer.bidirectional:
        raise ValueError(
            "compact(): bidirectional layers have no export form yet; export "
            "layer.to_torch() (full-size weights) instead"
        )
    shares = kernels.uniform_shares(layer)
    if shares is None:
        raise ValueError(
            "compact(): the export form needs one sharing rate per layer (every input "
            "and gate alike); this layer has a per-gate rate table. Export "
            "layer.to_torch() instead"
        )
    return CompactRNN(layer, shares)


class CompactRNN(nn.Module):
    """A restricted layer's compact blocks and an inference forward with torch.nn's
    interface: input ``(T, B, K)`` (``(B, T, K)`` with ``batch_first``) or unbatched
    ``(T, K)``; state ``h0 (L, B, H)``, and ``(h0, c0)`` for the LSTM; returns
    ``(output, h_n)`` / ``(output, (h_n, c_n))``. No dropout, no autograd."""

    def __init__(self, layer: nn.Module, shares: list[int]) -> None:
        super().__init__()
        self.mode = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "tanh", "RNN_RELU": "relu"}[
            layer.mode
        ]
        self.num_layers, self.hidden_size = layer.num_layers, layer.hidden_size
        self.batch_first, self.shares = layer.batch_first, list(shares)
        self.input_sizes = [res.input_size for res in layer.restrictions]
        n = {"lstm": 4, "gru": 3}.get(self.mode, 1)
        d = self.hidden_size
        for i, s in enumerate(shares):
            k, nq = self.input_sizes[i], n * (d - s)
            weight, bias = layer.pool(i)  # rows: shared, x's private, h's private
            w = weight.detach()
            self.register_buffer(f"shared_l{i}", w[:s].contiguous())  # (s, max(k, d))
            w_x, w_h = w[s : s + nq, :k], w[s + nq : s + 2 * nq, :d]
            if self.mode == "gru":  # n = tanh(a_n + r g_n) needs the x and h products apart
                self.register_buffer(f"weight_ih_l{i}", w_x.contiguous())
                self.register_buffer(f"weight_hh_l{i}", w_h.contiguous())
            else:  # one product per step on [x | h]: fewer operators per step
                self.register_buffer(f"weight_l{i}", torch.cat([w_x, w_h], 1))
            if bias is None:
                continue
            b = bias.detach()
            b_s, b_x, b_h = b[:s], b[s : s + nq], b[s + nq : s + 2 * nq]
            if self.mode == "gru":
                self.register_buffer(f"bias_shared_l{i}", b_s.clone())
                self.register_buffer(f"bias_ih_l{i}", b_x.clone())
                self.register_buffer(f"bias_hh_l{i}", b_h.clone())
            else:  # the x and h biases meet in one sum
                self.register_buffer(f"bias_shared_l{i}", 2 * b_s)
                self.register_buffer(f"bias_ih_l{i}", b_x + b_h)

    def _blocks(self, i: int):
        get = lambda name: getattr(self, f"{name}_l{i}", None)  # noqa: E731
        return (get("shared"), get("bias_shared"), get("weight_ih"), get("bias_ih"),
                get("weight_hh"), get("bias_hh"), get("weight"))  # fmt: skip

    @torch.no_grad()
    def forward(self, input: Tensor, hx=None):
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)  # (T, B, K)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        lstm = self.mode == "lstm"
        B = x.shape[1]
        if hx is None:
            zeros = x.new_zeros(self.num_layers, B, self.hidden_size)  # (L, B, H)
            hx = (zeros, zeros) if lstm else zeros
        elif not batched:
            hx = tuple(h.unsqueeze(1) for h in hx) if lstm else hx.unsqueeze(1)
        h0, c0 = hx if lstm else (hx, None)
        last_h, last_c = [], []
        for i in range(self.num_layers):
            x, h, c = self._layer(i, x, h0[i], c0[i] if lstm else None)
            last_h.append(h)
            last_c.append(c)
        h_n = torch.stack(last_h)  # (L, B, H)
        state = (h_n, torch.stack(last_c)) if lstm else h_n
        if not batched:
            x = x.squeeze(1)
            state = tuple(t.squeeze(1) for t in state) if lstm else state.squeeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, state

    def _layer(self, i: int, x: Tensor, h: Tensor, c: Tensor | None):
        """One layer over the sequence: x (T, B, k); h, c (B, d)."""
        S, bS, Wx, bx, Wh, bh, W = self._blocks(i)
        s, d = self.shares[i], self.hidden_size
        q = d - s
        width = max(self.input_sizes[i], d)
        xw = _pad(x, width) if s else None  # (T, B, width): x in S's columns
        gru = self.mode == "gru"
        if gru:
            ax = F.linear(x, Wx, bx) if q else None  # (T, B, 3q): x's private products
            axs = F.linear(xw, S, bS) if s else None  # (T, B, s): a_S, x's shared products
        outs = []
        for t in range(x.shape[0]):
            hw = _pad(h, width) if s else None
            if gru:
                hp = F.linear(h, Wh, bh) if q else None  # (B, 3q)
                gs = F.linear(hw, S, bS) if s else None  # g_S, h's shared products
                h = _gru_step(axs[t] if s else None, gs, ax[t] if q else None, hp, h, s)
                outs.append(h)
                continue
            zp = F.linear(torch.cat([x[t], h], -1), W, bx) if q else None  # (B, n*q)
            if self.mode == "lstm":
                h, c = _lstm_step(xw[t] + hw if s else None, S, bS, zp, c, s)
            else:
                z = [F.linear(xw[t] + hw, S, bS)] if s else []
                z += [zp] if q else []
                z = torch.cat(z, -1) if len(z) > 1 else z[0]
                h = torch.tanh(z) if self.mode == "tanh" else torch.relu(z)
            outs.append(h)
        return torch.stack(outs), h, c


def _pad(t: Tensor, width: int) -> Tensor:
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


def _lstm_step(us, S, bS, zp, c, s):
    """``us = x + h`` in S's columns (B, width) or None; ``zp`` (B, 4q) the private
    pre-activations or None. Shared columns: i = f = o = sigmoid(z_S), g = tanh(z_S),
    so c_S' = sigmoid(z_S) (c_S + tanh(z_S)); the two halves are joined once."""
    hs, cs = [], []
    if us is not None:
        zs = F.linear(us, S, bS)  # (B, s)
        sig = torch.sigmoid(zs)
        c_s = sig * (c[..., :s] + torch.tanh(zs))
        hs.append(sig * torch.tanh(c_s))
        cs.append(c_s)
    if zp is not None:
        zi, zf, zg, zo = zp.chunk(4, -1)  # (B, q) each
        c_p = torch.sigmoid(zf) * c[..., s:] + torch.sigmoid(zi) * torch.tanh(zg)
        hs.append(torch.sigmoid(zo) * torch.tanh(c_p))
        cs.append(c_p)
    if len(hs) == 1:
        return hs[0], cs[0]
    return torch.cat(hs, -1), torch.cat(cs, -1)


def _gru_step(a_s, g_s, ap, gp, h, s):
    """Shared columns: r = z = u = sigmoid(a_S + g_S), n = tanh(a_S + u g_S);
    private: torch.nn's GRU on (a_r, a_z, a_n) and (g_r, g_z, g_n)."""
    zs, ns = [], []
    if a_s is not None:
        u = torch.sigmoid(a_s + g_s)
        zs.append(u)
        ns.append(torch.tanh(a_s + u * g_s))
    if ap is not None:
        ar, az, an = ap.chunk(3, -1)
        gr, gz, gn = gp.chunk(3, -1)
        r = torch.sigmoid(ar + gr)
        zs.append(torch.sigmoid(az + gz))
        ns.append(torch.tanh(an + r * gn))
    z = torch.cat(zs, -1) if len(zs) > 1 else zs[0]
    n = torch.cat(ns, -1) if len(ns) > 1 else ns[0]
    return n + z * (h - n)  # (1 - z) n + z h
