"""Intrinsic Sparse Structures (Wen et al. 2018, arXiv 1709.05027).

The ISS group of hidden unit ``k`` of layer ``l`` (``G`` gates, ``H`` units) is
every weight that exists only because unit ``k`` does:

- row ``g*H + k`` (every gate ``g``) of ``weight_ih_l``, ``weight_hh_l``,
  ``bias_ih_l`` and ``bias_hh_l``;
- column ``k`` of ``weight_hh_l`` (the recurrence reads ``h_k``);
- column ``k`` of whatever reads ``h_k`` next: ``weight_ih_{l+1}``, or for the last
  layer the ``reader`` (the decoder's weight, ``(V, H)``).

Entries in both a row and the column of ``weight_hh_l`` count once. Training adds
``lam * sum_k sqrt(|group_k|^2 + 1e-8)`` (:meth:`ISSRegularizer.penalty`) to the
loss and zeroes weights below ``threshold`` after every step
(:meth:`ISSRegularizer.step`). A unit whose whole group is zero never moves
from a zero state, and nothing reads it, so :func:`compact` removes it: the result
is a :class:`StackedRNN` whose layers may differ in width and which gives the
outputs of the large masked model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..restriction import num_gates
from ..torch_classes import TORCH_LAYERS
from .sizes import stacked_count

EPS = 1e-8


def _mode_of(rnn: nn.RNNBase) -> str:
    if not isinstance(rnn, nn.RNNBase) or rnn.mode not in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        raise ValueError(f"ISS works on torch.nn RNN/GRU/LSTM layers, got {type(rnn).__name__}")
    if rnn.bidirectional or getattr(rnn, "proj_size", 0) or not rnn.bias or rnn.batch_first:
        raise ValueError(
            "ISS needs a unidirectional torch.nn layer with biases, no projection and "
            "batch_first=False"
        )
    return {"LSTM": "lstm", "GRU": "gru"}.get(rnn.mode, "rnn")


def group_entries(mode: str, hidden_size: int, k: int) -> dict[str, tuple]:
    """Which entries of layer ``l``'s tensors form unit ``k``'s group, as index
    tuples: ``{"rows": rows of W_ih/W_hh/biases, "hh_column": k, "reader_column": k}``."""
    if not 0 <= k < hidden_size:
        raise ValueError(f"unit {k} is outside a layer of {hidden_size} units")
    rows = tuple(g * hidden_size + k for g in range(num_gates(mode)))
    return {"rows": rows, "hh_column": k, "reader_column": k}


def _layer(rnn: nn.RNNBase, l: int) -> dict[str, Tensor]:
    return {n: getattr(rnn, f"{n}_l{l}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def group_norms_sq(rnn: nn.RNNBase, reader: Tensor) -> list[Tensor]:
    """Per layer, the squared norm of every unit's group, ``(H,)`` each."""
    h, g = rnn.hidden_size, num_gates(_mode_of(rnn))
    out = []
    for l in range(rnn.num_layers):
        p = _layer(rnn, l)
        rows = lambda w: (w * w).view(g, h, -1).sum((0, 2))  # noqa: E731  (H,) over the G rows of unit k
        sq = rows(p["weight_ih"]) + rows(p["weight_hh"])
        sq = sq + (p["bias_ih"] ** 2).view(g, h).sum(0) + (p["bias_hh"] ** 2).view(g, h).sum(0)
        whh = p["weight_hh"]
        diag = whh.view(g, h, h).diagonal(dim1=1, dim2=2)  # (G, H): W_hh[g*H+k, k], in both
        sq = sq + (whh * whh).sum(0) - (diag * diag).sum(0)
        nxt = getattr(rnn, f"weight_ih_l{l + 1}") if l + 1 < rnn.num_layers else reader
        out.append(sq + (nxt * nxt).sum(0))
    return out


class ISSRegularizer:
    """Group Lasso over the ISS groups of ``rnn`` (a torch.nn RNN/GRU/LSTM) whose
    last layer is read by ``reader`` (``(V, H)``, e.g. the decoder's weight).

    Call :meth:`penalty` into the loss, :meth:`step` after ``optimizer.step()``.
    :meth:`cut` removes the weakest units to meet a parameter budget (a budgeted
    variant: the groups with the smallest norms go, the rest train on with the
    penalty off); removed units stay masked at every later :meth:`step`.
    """

    def __init__(
        self, rnn: nn.RNNBase, reader: Tensor, lam: float, threshold: float = 1e-4
    ) -> None:
        self.mode = _mode_of(rnn)
        if not (isinstance(lam, (int, float)) and lam >= 0) or isinstance(lam, bool):
            raise ValueError(f"ISS lambda must be a number >= 0, got {lam!r}")
        if reader.dim() != 2 or reader.size(1) != rnn.hidden_size:
            raise ValueError(
                f"the reader must be (V, {rnn.hidden_size}), got {tuple(reader.shape)}"
            )
        self.rnn, self.reader, self.lam, self.threshold = rnn, reader, float(lam), float(threshold)
        self.active = True  # the penalty and the small-weight zeroing; off after cut()
        self.removed = [
            torch.zeros(rnn.hidden_size, dtype=torch.bool) for _ in range(rnn.num_layers)
        ]

    def penalty(self) -> Tensor:
        if not self.active or self.lam == 0:
            return self.reader.new_zeros(())
        return self.lam * sum(
            torch.sqrt(sq + EPS).sum() for sq in group_norms_sq(self.rnn, self.reader)
        )

    def _tensors(self) -> list[Tensor]:
        return [p for l in range(self.rnn.num_layers) for p in _layer(self.rnn, l).values()] + [
            self.reader
        ]

    @torch.no_grad()
    def step(self) -> None:
        if self.active and self.threshold > 0:
            for p in self._tensors():
                p.masked_fill_(p.abs() < self.threshold, 0.0)
        self._apply_removed()

    @torch.no_grad()
    def _apply_removed(self) -> None:
        g = num_gates(self.mode)
        for l, gone in enumerate(self.removed):
            if not gone.any():
                continue
            gone = gone.to(self.reader.device)
            rows = gone.repeat(g)  # (G*H,)
            p = _layer(self.rnn, l)
            for name in p:
                p[name][rows] = 0.0
            p["weight_hh"][:, gone] = 0.0
            nxt = (
                getattr(self.rnn, f"weight_ih_l{l + 1}")
                if l + 1 < self.rnn.num_layers
                else self.reader
            )
            nxt[:, gone] = 0.0

    def widths(self) -> list[int]:
        """Units per layer whose group is not entirely zero."""
        return [int((sq > 0).sum()) for sq in group_norms_sq(self.rnn, self.reader)]

    def group_sizes(self) -> list[int]:
        """Entries per group, by layer: ``G (K_l + 2H + 1) + R_l`` with ``R_l`` the
        reader's rows (the next layer's ``G*H``, or the decoder's ``V``)."""
        g, h = num_gates(self.mode), self.rnn.hidden_size
        out = []
        for l in range(self.rnn.num_layers):
            k = self.rnn.input_size if l == 0 else h
            r = g * h if l + 1 < self.rnn.num_layers else self.reader.size(0)
            out.append(g * (k + 2 * h + 1) + r)
        return out

    @torch.no_grad()
    def cut(self, target: int) -> list[int]:
        """Remove the units with the smallest root-mean-square group entry (over all
        layers: the decoder's columns make the last layer's groups far larger, so raw
        norms would never remove its units), one at a time, until the compacted
        stack's count is at most ``target``; returns the widths."""
        sizes = self.group_sizes()
        norms = [sq / n for sq, n in zip(group_norms_sq(self.rnn, self.reader), sizes)]
        order = sorted(
            ((float(v), l, k) for l, sq in enumerate(norms) for k, v in enumerate(sq.tolist())
             if not self.removed[l][k]),
            key=lambda t: t[0],
        )  # fmt: skip
        widths = [int((~r).sum()) for r in self.removed]
        for _, l, k in order:
            if stacked_count(self.mode, self.rnn.input_size, widths) <= target:
                break
            if widths[l] == 1:
                continue  # a layer keeps at least one unit
            self.removed[l][k] = True
            widths[l] -= 1
        self.active = False
        self._apply_removed()
        return widths

    def state_dict(self) -> dict:
        return {"active": self.active, "removed": [r.clone() for r in self.removed]}

    def load_state_dict(self, state: dict) -> None:
        self.active = bool(state["active"])
        self.removed = [r.clone().to(torch.bool) for r in state["removed"]]
        if [r.numel() for r in self.removed] != [self.rnn.hidden_size] * self.rnn.num_layers:
            raise ValueError("ISS state is for another layer shape")
        self._apply_removed()


class StackedRNN(nn.Module):
    """A classical stack whose layers may differ in width: layer ``l`` is a one-layer
    torch.nn ``mode`` module of ``widths[l]`` units reading layer ``l-1``'s output.

    Input ``(T, B, input_size)``; state a list with one entry per layer, ``h_l
    (1, B, w_l)`` or for the LSTM ``(h_l, c_l)``; output ``(T, B, widths[-1])``.
    """

    def __init__(self, mode: str, input_size: int, widths, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        stacked_count(mode, input_size, widths)  # checks the sizes
        self.mode, self.input_size, self.widths, self.dropout = (
            mode,
            input_size,
            widths,
            float(dropout),
        )
        ks = [input_size] + widths[:-1]
        self.layers = nn.ModuleList(TORCH_LAYERS[mode](k, w) for k, w in zip(ks, widths))

    @property
    def hidden_size(self) -> int:
        return self.widths[-1]

    def init_state(self, batch: int, like: Tensor) -> list:
        hs = [like.new_zeros(1, batch, w) for w in self.widths]  # (1, B, w_l)
        return [(h, h.clone()) for h in hs] if self.mode == "lstm" else hs

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, input: Tensor, hx=None):
        if hx is None:
            hx = self.init_state(input.size(1), input)
        x, states = input, []
        for l, layer in enumerate(self.layers):
            if l > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, True)
            x, s = layer(x, hx[l])
            states.append(s)
        return x, states


@torch.no_grad()
def compact(rnn: nn.RNNBase, reader: Tensor) -> tuple[StackedRNN, Tensor, list[Tensor]]:
    """Drop every unit whose ISS group is entirely zero.

    Returns ``(stack, reader_columns, kept)``: a :class:`StackedRNN` with the kept
    units' weights, the reader's kept columns ``(V, w_last)`` and the kept unit
    indices per layer. From a zero state the stack's output equals the kept
    columns of ``rnn``'s output, so ``reader_columns @ out`` is unchanged.
    """
    mode = _mode_of(rnn)
    g, h = num_gates(mode), rnn.hidden_size
    kept = [torch.nonzero(sq > 0).flatten() for sq in group_norms_sq(rnn, reader)]
    kept = [k if k.numel() else torch.zeros(1, dtype=torch.long, device=k.device) for k in kept]
    stack = StackedRNN(mode, rnn.input_size, [k.numel() for k in kept], rnn.dropout)
    stack = stack.to(device=reader.device, dtype=reader.dtype)
    cols = None  # the kept inputs of layer l
    for l, keep in enumerate(kept):
        p = _layer(rnn, l)
        rows = torch.cat([keep + gate * h for gate in range(g)])  # (G*w,) gate-major
        w_ih = p["weight_ih"][rows]
        if cols is not None:
            w_ih = w_ih[:, cols]
        dst = stack.layers[l]
        dst.weight_ih_l0.copy_(w_ih)
        dst.weight_hh_l0.copy_(p["weight_hh"][rows][:, keep])
        dst.bias_ih_l0.copy_(p["bias_ih"][rows])
        dst.bias_hh_l0.copy_(p["bias_hh"][rows])
        cols = keep
    return stack, reader[:, cols].clone(), kept
