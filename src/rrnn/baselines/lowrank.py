"""Low-rank recurrent layers (Lu, Sindhwani and Sainath 2016, arXiv 1604.02594).

Two forms, both trained from scratch:

- **factors** (:class:`LowRankRNN`, unshared): every input matrix
  ``W_ih_l (G*H, K_l) = A_ih_l (G*H, rank) @ B_ih_l (rank, K_l)`` and every
  recurrent matrix ``W_hh_l (G*H, H) = A_hh_l (G*H, rank) @ B_hh_l (rank, H)``,
  no nonlinearity between; biases stay full. The products are formed once per
  call and the sequence then runs through torch's own RNN kernels, so values,
  autograd and speed are torch.nn's at the rank's parameter count.
- **projection** (shared): one projection ``P_l (rank, H)`` per layer whose output
  ``m_t = P_l h_t`` is read both by the layer's recurrence and by the next layer
  (or the decoder). For the LSTM this is exactly ``torch.nn.LSTM(proj_size=rank)``
  (:func:`projected`); :class:`ProjectedRNN` gives the GRU and the tanh/ReLU RNN
  the same structure: ``W_hh_l`` is ``(G*H, rank)``, the state ``h`` stays ``H``
  wide (the GRU interpolates it), and the layer outputs ``m``.

Gate order and bias layout are torch.nn's: RNN (1 gate), GRU (r, z, n), LSTM (i, f, g, o).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..restriction import num_gates
from ..torch_classes import TORCH_LAYERS
from .sizes import check_rank

_VF_NAMES = {"rnn": "rnn_tanh", "relu": "rnn_relu", "gru": "gru", "lstm": "lstm"}


def _mode(mode: str, nonlinearity: str) -> str:
    if mode not in ("rnn", "gru", "lstm"):
        raise ValueError(f"mode must be 'rnn', 'gru' or 'lstm', got {mode!r}")
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return "relu" if (mode == "rnn" and nonlinearity == "relu") else mode


class LowRankRNN(nn.Module):
    """A stack of ``num_layers`` recurrent layers with rank-``rank`` factored weights.

    Input ``(T, B, input_size)`` (``batch_first`` False, as the language model uses),
    state as torch.nn's: ``h (L, B, H)``, and for the LSTM ``(h, c)``.

    Parameters of layer ``l`` (``K_0 = input_size``, ``K_l = H`` after):
    ``weight_ih_a_l{l} (G*H, rank)``, ``weight_ih_b_l{l} (rank, K_l)``,
    ``weight_hh_a_l{l} (G*H, rank)``, ``weight_hh_b_l{l} (rank, H)``,
    ``bias_ih_l{l} (G*H)``, ``bias_hh_l{l} (G*H)``.
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, rank=1, dropout=0.0,
                 nonlinearity="tanh") -> None:  # fmt: skip
        super().__init__()
        self.vf_mode = _mode(mode, nonlinearity)
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.rank, self.dropout = num_layers, rank, float(dropout)
        check_rank(rank, input_size, hidden_size, "factors")
        gh = num_gates(mode) * hidden_size
        for layer in range(num_layers):
            k = input_size if layer == 0 else hidden_size
            for name, shape in (("weight_ih_a", (gh, rank)), ("weight_ih_b", (rank, k)),
                                ("weight_hh_a", (gh, rank)), ("weight_hh_b", (rank, hidden_size)),
                                ("bias_ih", (gh,)), ("bias_hh", (gh,))):  # fmt: skip
                self.register_parameter(f"{name}_l{layer}", nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Products distributed like torch.nn's weights: with both factors
        uniform(-a, a), ``Var(W) = rank * a**4 / 9 = 1 / (3H)``, the variance of
        uniform(-1/sqrt(H), 1/sqrt(H)); biases uniform(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        a = (3.0 / (self.rank * self.hidden_size)) ** 0.25
        for name, p in self.named_parameters():
            nn.init.uniform_(p, -bound, bound) if name.startswith("bias") else nn.init.uniform_(
                p, -a, a
            )

    def full_weights(self) -> list[Tensor]:
        """torch.nn's flat weight list: per layer ``W_ih, W_hh, b_ih, b_hh``."""
        out = []
        for l in range(self.num_layers):
            g = lambda n, l=l: getattr(self, f"{n}_l{l}")  # noqa: E731
            out += [g("weight_ih_a") @ g("weight_ih_b"), g("weight_hh_a") @ g("weight_hh_b"),
                    g("bias_ih"), g("bias_hh")]  # fmt: skip
        return out

    @contextlib.contextmanager
    def frozen(self):
        """Inference with the products ``A @ B`` formed once on entry and kept until
        exit (outside, every call forms them afresh, so that no weight update can be
        missed). The weights must not change inside; calls that need gradients
        still form the products."""
        with torch.no_grad():
            self._frozen = [w.detach() for w in self.full_weights()]
        try:
            yield self
        finally:
            self._frozen = None

    def forward(self, input: Tensor, hx=None):
        if input.dim() != 3 or input.size(-1) != self.input_size:
            raise ValueError(
                f"LowRankRNN expects input (T, B, {self.input_size}), got {tuple(input.shape)}"
            )
        b = input.size(1)
        if hx is None:
            h = input.new_zeros(self.num_layers, b, self.hidden_size)  # (L, B, H)
            hx = (h, h.clone()) if self.mode == "lstm" else h
        frozen = getattr(self, "_frozen", None)
        needs_grad = torch.is_grad_enabled() and (
            input.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        flat = frozen if frozen is not None and not needs_grad else self.full_weights()
        fn = getattr(torch._VF, _VF_NAMES[self.vf_mode])
        if self.mode == "lstm":
            out = fn(input, tuple(hx), flat, True, self.num_layers, self.dropout,
                     self.training, False, False)  # fmt: skip
            return out[0], (out[1], out[2])
        out, h = fn(input, hx, flat, True, self.num_layers, self.dropout,
                    self.training, False, False)  # fmt: skip
        return out, h

    def to_dense(self) -> nn.RNNBase:
        """The torch.nn module with the products as its weights (same outputs)."""
        cls = TORCH_LAYERS[self.mode]
        kw = {"nonlinearity": "relu"} if self.vf_mode == "relu" else {}
        m = cls(self.input_size, self.hidden_size, self.num_layers, dropout=self.dropout, **kw)
        with torch.no_grad():
            for p, w in zip(m._flat_weights, self.full_weights()):
                p.copy_(w)
        return m

    def extra_repr(self) -> str:
        return (f"{self.mode}, {self.input_size}, {self.hidden_size}, num_layers="
                f"{self.num_layers}, rank={self.rank}, dropout={self.dropout}")  # fmt: skip


def projected(mode, input_size, hidden_size, num_layers=1, rank=1, dropout=0.0) -> nn.Module:
    """The shared-projection layer of ``mode``: ``torch.nn.LSTM(proj_size=rank)`` for
    the LSTM, :class:`ProjectedRNN` for the GRU and the RNN."""
    check_rank(rank, input_size, hidden_size, "projection")
    if mode == "lstm":
        return nn.LSTM(input_size, hidden_size, num_layers, dropout=dropout, proj_size=rank)
    return ProjectedRNN(mode, input_size, hidden_size, num_layers, rank, dropout)


class ProjectedRNN(nn.Module):
    """GRU or tanh RNN whose recurrence and next layer read ``m_t = P h_t``.

    Layer ``l`` (``K_0 = input_size``, ``K_l = rank`` after):
    ``weight_ih_l{l} (G*H, K_l)``, ``weight_hh_l{l} (G*H, rank)``,
    ``weight_hr_l{l} (rank, H)`` (the projection, named as in torch.nn.LSTM),
    ``bias_ih_l{l}``, ``bias_hh_l{l} (G*H)``. Per step (GRU)::

        gi = W_ih x_t + b_ih, gh = W_hh m_{t-1} + b_hh            # (B, 3H) each
        r, z = sigmoid(gi_r + gh_r), sigmoid(gi_z + gh_z)
        n = tanh(gi_n + r * gh_n);  h_t = (1 - z) * n + z * h_{t-1};  m_t = P h_t

    and for the RNN ``h_t = tanh(gi + gh)``. Input ``(T, B, input_size)``, state
    ``h (L, B, H)``; output ``(T, B, rank)``.
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, rank=1, dropout=0.0) -> None:
        super().__init__()
        if mode not in ("rnn", "gru"):
            raise ValueError(f"ProjectedRNN is for 'rnn' and 'gru' (the LSTM: torch.nn.LSTM "
                             f"with proj_size), got {mode!r}")  # fmt: skip
        check_rank(rank, input_size, hidden_size, "projection")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.rank, self.dropout = num_layers, rank, float(dropout)
        gh = num_gates(mode) * hidden_size
        for l in range(num_layers):
            k = input_size if l == 0 else rank
            for name, shape in (("weight_ih", (gh, k)), ("weight_hh", (gh, rank)),
                                ("weight_hr", (rank, hidden_size)), ("bias_ih", (gh,)),
                                ("bias_hh", (gh,))):  # fmt: skip
                self.register_parameter(f"{name}_l{l}", nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, input: Tensor, hx=None):
        if input.dim() != 3 or input.size(-1) != self.input_size:
            raise ValueError(
                f"ProjectedRNN expects input (T, B, {self.input_size}), got {tuple(input.shape)}"
            )
        if hx is None:
            hx = input.new_zeros(self.num_layers, input.size(1), self.hidden_size)  # (L, B, H)
        x, last = input, []
        for l in range(self.num_layers):
            g = lambda n, l=l: getattr(self, f"{n}_l{l}")  # noqa: E731
            if l > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, True)
            gi = F.linear(x, g("weight_ih"), g("bias_ih"))  # (T, B, G*H)
            h, proj = hx[l], g("weight_hr")
            m = F.linear(h, proj)  # (B, rank)
            outs = []
            for t in range(x.size(0)):
                gh = F.linear(m, g("weight_hh"), g("bias_hh"))  # (B, G*H)
                if self.mode == "rnn":
                    h = torch.tanh(gi[t] + gh)
                else:
                    ir, iz, in_ = gi[t].chunk(3, -1)
                    hr, hz, hn = gh.chunk(3, -1)
                    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                    h = (1 - z) * torch.tanh(in_ + r * hn) + z * h
                m = F.linear(h, proj)  # (B, rank)
                outs.append(m)
            x = torch.stack(outs)  # (T, B, rank)
            last.append(h)
        return x, torch.stack(last)  # (T, B, rank), (L, B, H)

    def extra_repr(self) -> str:
        return (f"{self.mode}, {self.input_size}, {self.hidden_size}, num_layers="
                f"{self.num_layers}, rank={self.rank}, dropout={self.dropout}")  # fmt: skip
