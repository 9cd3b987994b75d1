"""Inference forms of the compressed layers, for export: the compression kept.

A restricted layer computes, per layer, only its distinct gate rows: the ``s``
shared rows (one block ``S``, read by x and h alike) and the ``q = d - s`` private
rows of each gate. :func:`compact` turns a trained ``RestrictedRNN/GRU/LSTM`` (a
uniform sharing rate per layer, unidirectional) into a :class:`CompactRNN` that
holds exactly those blocks, each stored once and contiguous in a frozen
``nn.Linear``, and runs them with plain matrix products and element-wise ops:
nothing slices, concatenates or gathers a weight, so an exporter
(``torch.onnx.export``, ``torch.export``) records the compact blocks as constants
and a runtime's optimiser has nothing to fold back to full size; and
``torch.ao.quantization.quantize_dynamic`` (or torchao) swaps the blocks for int8
ones, as it does a torch.nn model's linear layers.

Because every gate reads the same shared rows from x and from h, the LSTM's and
the RNN's shared pre-activations are ``(x + h) S^T`` (x and h padded to S's
width): one product where torch.nn, and the layer's training path, compute two.
The GRU keeps the two apart, as ``n = tanh(a_n + r * g_n)`` needs them.

Blocks of layer l (k = its input size, d = hidden size, n = 4, 3, 1 gates), as
``nn.Linear(in, out)`` of weight ``(out, in)``:

======================  ===========================================================
``shared_l{l}``         ``(s, max(k, d))``: the shared rows; bias ``(s,)``, for the
                        LSTM/RNN twice the shared bias (x's and h's)
``private_l{l}``        LSTM/RNN ``(n*q, k + d)``: ``[x's | h's]`` private rows, gate
                        after gate (torch.nn's order: i f g o; one); bias x's and
                        h's private biases summed
``private_ih_l{l}``     GRU ``(3q, k)``: x's private rows (r z n), x's bias
``private_hh_l{l}``     GRU ``(3q, d)``: h's private rows, h's bias
======================  ===========================================================

A block with no rows (s = 0, or q = 0 at r = 1) is absent.

The compared methods have forms of the same kind (:func:`export_form` picks one):
:class:`FactoredRNN` runs a low-rank stack's factors as two thin products
instead of forming ``A @ B`` every call, and :class:`ProjectedLSTM` is
``torch.nn.LSTM(proj_size=...)`` in plain ops, which ONNX Runtime loads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CompactRNN", "FactoredRNN", "ProjectedLSTM", "compact", "export_form"]


def export_form(rnn: nn.Module) -> nn.Module:
    """The inference form that keeps ``rnn``'s compression in an exported graph: a
    restricted layer's :func:`compact` blocks, a low-rank stack's factors
    (:class:`FactoredRNN`), a projected LSTM in plain ops (:class:`ProjectedLSTM`);
    any other module as it is (torch.nn's layers export as the runtimes' own RNN
    operators)."""
    from .baselines.lowrank import LowRankRNN
    from .modules import RestrictedRNNBase

    if isinstance(rnn, RestrictedRNNBase):
        return compact(rnn)
    if isinstance(rnn, LowRankRNN):
        return FactoredRNN(rnn)
    if isinstance(rnn, nn.LSTM) and rnn.proj_size > 0:
        return ProjectedLSTM(rnn)
    return rnn


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
            b = bias.detach() if bias is not None else None
            b_s, b_x, b_h = (None,) * 3 if b is None else (b[:s], b[s : s + nq], b[s + nq : s + 2 * nq])
            w_x, w_h = w[s : s + nq, :k], w[s + nq : s + 2 * nq, :d]
            if self.mode == "gru":  # n = tanh(a_n + r g_n) needs the x and h products apart
                self._add(f"shared_l{i}", w[:s], b_s)  # (s, max(k, d))
                self._add(f"private_ih_l{i}", w_x, b_x)  # (3q, k)
                self._add(f"private_hh_l{i}", w_h, b_h)  # (3q, d)
            else:  # x's and h's shared rows meet in one sum, their private rows in one product
                self._add(f"shared_l{i}", w[:s], None if b is None else 2 * b_s)
                self._add(f"private_l{i}", torch.cat([w_x, w_h], 1),
                          None if b is None else b_x + b_h)  # (n*q, k + d)  # fmt: skip

    def _add(self, name: str, weight: Tensor, bias: Tensor | None) -> None:
        """One block as a frozen ``nn.Linear`` (none for an empty block)."""
        if weight.shape[0]:
            setattr(self, name, frozen_linear(weight, bias))

    def _blocks(self, i: int):
        get = lambda name: getattr(self, f"{name}_l{i}", None)  # noqa: E731
        return get("shared"), get("private_ih"), get("private_hh"), get("private")

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
        S, Px, Ph, P = self._blocks(i)
        s, width = self.shares[i], max(self.input_sizes[i], self.hidden_size)
        xw = _pad(x, width) if S else None  # (T, B, width): x in S's columns
        if self.mode == "gru":
            ax = Px(x) if Px else None  # (T, B, 3q): x's private products
            axs = S(xw) if S else None  # (T, B, s): a_S, x's shared products
        outs = []
        for t in range(x.shape[0]):
            hw = _pad(h, width) if S else None
            if self.mode == "gru":
                gs = S(hw) if S else None  # (B, s): g_S, h's shared products
                hp = Ph(h) if Ph else None  # (B, 3q)
                h = _gru_step(axs[t] if S else None, gs, ax[t] if Px else None, hp, h)
                outs.append(h)
                continue
            zs = S(xw[t] + hw) if S else None  # (B, s)
            zp = P(torch.cat([x[t], h], -1)) if P else None  # (B, n*q)
            if self.mode == "lstm":
                h, c = _lstm_step(zs, zp, c, s)
            else:
                z = torch.cat([zs, zp], -1) if S and P else (zs if S else zp)
                h = torch.tanh(z) if self.mode == "tanh" else torch.relu(z)
            outs.append(h)
        return torch.stack(outs), h, c


def frozen_linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """A frozen ``nn.Linear`` holding contiguous copies: a block ``quantize_dynamic``
    (or torchao) can swap, which an exporter records as one constant."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.requires_grad_(False)


class _Stack(nn.Module):
    """torch.nn's interface around ``_layer(i, x, h, c)`` for forms that take
    ``(T, B, K)`` input: ``h0 (L, B, state_size)``, ``c0 (L, B, hidden_size)``."""

    num_layers: int
    hidden_size: int
    state_size: int
    lstm: bool

    @torch.no_grad()
    def forward(self, input: Tensor, hx=None):
        if hx is None:
            B = input.shape[1]
            h0 = input.new_zeros(self.num_layers, B, self.state_size)  # (L, B, P or H)
            hx = (h0, input.new_zeros(self.num_layers, B, self.hidden_size)) if self.lstm else h0
        h0, c0 = hx if self.lstm else (hx, None)
        x, last_h, last_c = input, [], []
        for i in range(self.num_layers):
            x, h, c = self._layer(i, x, h0[i], c0[i] if self.lstm else None)
            last_h.append(h)
            last_c.append(c)
        h_n = torch.stack(last_h)
        return x, ((h_n, torch.stack(last_c)) if self.lstm else h_n)


class FactoredRNN(_Stack):
    """A :class:`~rrnn.baselines.lowrank.LowRankRNN` for inference: each factor pair
    ``W = A @ B`` as two frozen ``nn.Linear`` applied in turn, ``(x B^T) A^T``, so
    the graph holds ``rank * (G*H + K)`` weights per matrix and never forms the
    ``(G*H, K)`` product. Layer l: ``ih_b_l{l} (rank, K_l)``, ``ih_a_l{l} (G*H,
    rank)`` with the input bias (LSTM/RNN: both biases summed), ``hh_b_l{l} (rank,
    H)``, ``hh_a_l{l} (G*H, rank)`` (GRU: with the recurrent bias)."""

    def __init__(self, stack: nn.Module) -> None:
        super().__init__()
        self.mode = {"rnn": "tanh"}.get(stack.vf_mode, stack.vf_mode)
        self.num_layers, self.hidden_size = stack.num_layers, stack.hidden_size
        self.state_size, self.lstm = stack.hidden_size, stack.mode == "lstm"
        for i in range(self.num_layers):
            g = lambda n, i=i: getattr(stack, f"{n}_l{i}").detach()  # noqa: E731
            gru = self.mode == "gru"
            b_ih = g("bias_ih") if gru else g("bias_ih") + g("bias_hh")
            setattr(self, f"ih_b_l{i}", frozen_linear(g("weight_ih_b"), None))
            setattr(self, f"ih_a_l{i}", frozen_linear(g("weight_ih_a"), b_ih))
            setattr(self, f"hh_b_l{i}", frozen_linear(g("weight_hh_b"), None))
            setattr(self, f"hh_a_l{i}", frozen_linear(g("weight_hh_a"), g("bias_hh") if gru else None))

    def _layer(self, i: int, x: Tensor, h: Tensor, c: Tensor | None):
        get = lambda n: getattr(self, f"{n}_l{i}")  # noqa: E731
        ax = get("ih_a")(get("ih_b")(x))  # (T, B, G*H): the whole window at once
        hh_a, hh_b = get("hh_a"), get("hh_b")
        outs = []
        for t in range(x.shape[0]):
            gh = hh_a(hh_b(h))  # (B, G*H)
            if self.mode == "lstm":
                h, c = _lstm_step(None, ax[t] + gh, c, 0)
            elif self.mode == "gru":
                h = _gru_step(None, None, ax[t], gh, h)
            else:
                h = torch.tanh(ax[t] + gh) if self.mode == "tanh" else torch.relu(ax[t] + gh)
            outs.append(h)
        return torch.stack(outs), h, c


class ProjectedLSTM(_Stack):
    """``torch.nn.LSTM(proj_size=P)`` (unidirectional, ``batch_first=False``) in plain
    ops, which ONNX Runtime loads where torch's export of the fused layer does not.
    Layer l: ``ih_l{l} (4H, K_l)`` with both biases, ``hh_l{l} (4H, P)``, ``hr_l{l}
    (P, H)``; state ``h (L, B, P)``, ``c (L, B, H)``; output ``(T, B, P)``."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        if lstm.bidirectional or lstm.batch_first:
            raise ValueError("ProjectedLSTM: only unidirectional layers with batch_first=False")
        self.num_layers, self.hidden_size = lstm.num_layers, lstm.hidden_size
        self.state_size, self.lstm = lstm.proj_size, True
        for i in range(self.num_layers):
            g = lambda n, i=i: getattr(lstm, f"{n}_l{i}", None)  # noqa: E731
            bias = None if g("bias_ih") is None else (g("bias_ih") + g("bias_hh")).detach()
            setattr(self, f"ih_l{i}", frozen_linear(g("weight_ih").detach(), bias))
            setattr(self, f"hh_l{i}", frozen_linear(g("weight_hh").detach(), None))
            setattr(self, f"hr_l{i}", frozen_linear(g("weight_hr").detach(), None))

    def _layer(self, i: int, x: Tensor, h: Tensor, c: Tensor | None):
        get = lambda n: getattr(self, f"{n}_l{i}")  # noqa: E731
        ax, hh, hr = get("ih")(x), get("hh"), get("hr")  # ax (T, B, 4H)
        outs = []
        for t in range(x.shape[0]):
            full, c = _lstm_step(None, ax[t] + hh(h), c, 0)  # (B, H)
            h = hr(full)  # (B, P)
            outs.append(h)
        return torch.stack(outs), h, c


def _pad(t: Tensor, width: int) -> Tensor:
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


def _lstm_step(zs, zp, c, s):
    """``zs`` (B, s) the shared pre-activations or None; ``zp`` (B, 4q) the private
    ones or None. Shared columns: i = f = o = sigmoid(z_S), g = tanh(z_S), so
    c_S' = sigmoid(z_S) (c_S + tanh(z_S)); the two halves are joined once."""
    hs, cs = [], []
    if zs is not None:
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


def _gru_step(a_s, g_s, ap, gp, h):
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
