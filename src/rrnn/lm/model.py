"""The word-level language model of the paper (section IV-A)::

    tokens (T, B) -> Embedding(V, E) -> restricted RNN/GRU/LSTM (E -> H, L layers)
                  -> Linear(H, V) -> logits (T, B, V)

Dropout (the "tied-dropout" variant) falls between recurrent layers, on the
outputs of layers 1..L-1, as in the authors' code. Tied weights share the
embedding and decoder matrices (needs E == H).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from .. import modules
from ..baselines import LowRankRNN, StackedRNN, projected
from ..torch_classes import TORCH_LAYERS
from .config import BACKENDS, INITS, LOWRANK, ModelConfig  # noqa: F401  re-exported
from .loss import linear_cross_entropy

_RESTRICTED = {
    "rnn": modules.RestrictedRNN,
    "gru": modules.RestrictedGRU,
    "lstm": modules.RestrictedLSTM,
}


class RNNModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = nn.Embedding(c.vocab_size, c.embedding_size)
        self.rnn = _recurrent(c)
        self.decoder = nn.Linear(c.output_size, c.vocab_size)
        if c.tie_weights:
            self.decoder.weight = self.encoder.weight
        # PyTorch's default initialisation stands (the "authors" scheme); see initialize()

    def initialize(self, scheme: str = "authors") -> None:
        """Set the initial weights by ``scheme`` (one of ``INITS``).

        - ``"authors"``: what the paper's published runs used (its code's uniform
          initialiser was never called): PyTorch's defaults, i.e. the embedding, and
          so a tied decoder, N(0, 1); an untied decoder weight and the decoder bias
          uniform(-1/sqrt(H), 1/sqrt(H)); every recurrent weight and bias
          uniform(-1/sqrt(H), 1/sqrt(H)), as torch.nn (the authors' pools drew
          uniform(-1/sqrt(k)) with k the pool's width, the same at E = H).
          Redrawn here, so that calling it twice starts from the same kind of weights.
        - ``"uniform"``: the paper's text and pytorch/examples: the embedding and an
          untied decoder uniform(-0.1, 0.1), the decoder bias 0, recurrent layers as above.
        """
        if scheme not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {scheme!r}")
        if scheme == "authors":
            self.encoder.reset_parameters()  # N(0, 1)
            if not self.config.tie_weights:
                self.decoder.reset_parameters()
            else:
                bound = 1.0 / math.sqrt(self.config.hidden_size)
                nn.init.uniform_(self.decoder.bias, -bound, bound)
        else:
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            if not self.config.tie_weights:
                nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
        self.rnn.reset_parameters()

    def init_hidden(self, batch_size: int):
        c = self.config
        weight = self.decoder.weight
        if isinstance(self.rnn, StackedRNN):
            return self.rnn.init_state(batch_size, weight)  # one (1, B, w_l) per layer
        h = weight.new_zeros(c.layers, batch_size, c.hidden_size)  # (L, B, H)
        if c.cell != "lstm":
            return h
        proj = getattr(self.rnn, "proj_size", 0)
        return (h[..., :proj].clone() if proj else h, h.clone())  # h (L, B, P), c (L, B, H)

    def forward(self, tokens: Tensor, hidden, targets: Tensor | None = None, precision: str = "fp32"):
        """Logits ``(T*B, V)`` and the new hidden state; with ``targets`` (T*B,)
        the mean cross-entropy instead of the logits, by the chunked decoder +
        loss of :mod:`rrnn.lm.loss` (no (T*B, V) tensor is kept), whose GEMMs take
        bfloat16 operands with ``precision="bf16"``."""
        emb = self._embed(tokens, fused=targets is not None)  # (T, B, E)
        output, hidden = self.rnn(emb, hidden)  # (T, B, H)
        if targets is not None:
            flat = output.reshape(-1, output.size(-1))  # (T*B, H)
            value = linear_cross_entropy(
                flat, self.decoder.weight, self.decoder.bias, targets, precision=precision
            )
            return value, hidden
        logits = self.decoder(output)  # (T, B, V)
        return logits.view(-1, self.config.vocab_size), hidden  # (T*B, V)

    def _embed(self, tokens: Tensor, fused: bool) -> Tensor:
        """The embedding lookup. With tied weights and the fused loss, its gradient is
        taken sparse (the T*B rows it read): the decoder's dense (V, E) gradient of the
        same matrix arrives in the same autograd buffer, and the rows are added into it,
        instead of building a second dense (V, E) matrix (zeros, then the rows) and
        adding the two. The weight's .grad is dense as before."""
        e = self.encoder
        if not (fused and self.config.tie_weights and e.weight.requires_grad and not e.sparse):
            return e(tokens)
        return F.embedding(tokens, e.weight, e.padding_idx, e.max_norm, e.norm_type,
                           e.scale_grad_by_freq, sparse=True)  # fmt: skip

    def rnn_parameters(self) -> int:
        return sum(p.numel() for p in self.rnn.parameters())

    def total_parameters(self) -> int:
        # parameters() yields a tied matrix once
        return sum(p.numel() for p in self.parameters())


def _recurrent(c: ModelConfig) -> nn.Module:
    """The recurrent stack of ``c``: (T, B, E) -> (T, B, c.output_size)."""
    dropout = c.dropout if c.layers > 1 else 0.0
    args = (c.embedding_size, c.hidden_size, c.layers)
    if c.widths is not None:
        return StackedRNN(c.cell, c.embedding_size, c.widths, dropout)
    if c.compress == "lowrank":
        if c.lowrank == "projection":
            return projected(c.cell, *args, rank=c.rank, dropout=dropout)
        return LowRankRNN(c.cell, *args, rank=c.rank, dropout=dropout)
    if c.compress == "restrict" and c.backend == "rrnn":
        return _RESTRICTED[c.cell](*args, sharing_rate=c.sharing_rate, dropout=dropout)
    return TORCH_LAYERS[c.cell](*args, dropout=dropout)


def detach_hidden(hidden):
    """Cut the graph between windows (truncated backpropagation through time)."""
    if isinstance(hidden, Tensor):
        return hidden.detach()
    return tuple(detach_hidden(h) for h in hidden)
