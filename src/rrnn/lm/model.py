"""The word-level language model of the paper (section IV-A)::

    tokens (T, B) -> Embedding(V, E) -> restricted RNN/GRU/LSTM (E -> H, L layers)
                  -> Linear(H, V) -> logits (T, B, V)

Dropout (the "tied-dropout" variant) falls between recurrent layers, on the
outputs of layers 1..L-1, as in the authors' code. Tied weights share the
embedding and decoder matrices (needs E == H).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch.nn.functional as F
from torch import Tensor, nn

from .. import modules
from ..compress import METHODS, LowRankRNN, StackedRNN, projected, sizes
from ..restriction import MODES, num_gates, resolve_sharing_rates
from ..torch_classes import TORCH_LAYERS
from .loss import linear_cross_entropy

_RESTRICTED = {
    "rnn": modules.RestrictedRNN,
    "gru": modules.RestrictedGRU,
    "lstm": modules.RestrictedLSTM,
}
BACKENDS = ("rrnn", "torch")
INITS = ("authors", "uniform")
LOWRANK = ("factors", "projection")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint."""

    vocab_size: int
    cell: str = "lstm"
    sharing_rate: float | list = 0.5
    layers: int = 3
    embedding_size: int = 200
    hidden_size: int = 200
    dropout: float = 0.0
    tie_weights: bool = False
    backend: str = "rrnn"  # "torch": a plain torch.nn layer (sharing_rate must be 0)
    # the compression method (rrnn.compress): "restrict" is the restricted layer above;
    # "dense", "prune" and "iss" train a classical torch.nn layer (pruning masks and the
    # ISS regulariser live in the trainer); "lowrank" factors its matrices
    compress: str = "restrict"
    rank: int | None = None  # lowrank: the factors' rank or the projection's size
    lowrank: str = "factors"  # lowrank: "factors" (unshared) or "projection" (shared)
    widths: list | None = None  # a compacted ISS model: units per layer

    def __post_init__(self) -> None:
        if self.cell not in MODES:
            raise ValueError(f"cell must be one of {', '.join(MODES)}, got {self.cell!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("vocab_size", "layers", "embedding_size", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        resolve_sharing_rates(self.sharing_rate, self.layers, num_gates(self.cell))
        self._check_compress()
        if self.backend == "torch" and self.sharing_rate not in (0, 0.0):
            raise ValueError(
                f"backend='torch' builds a classical torch.nn layer; sharing_rate must be 0, "
                f"got {self.sharing_rate!r}"
            )
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(
                f"tied weights need embedding size == hidden size, got embedding_size="
                f"{self.embedding_size} and hidden_size={self.hidden_size}; set them equal "
                "or untie the weights (variant 'plain')"
            )
        if not 0.0 <= float(self.dropout) <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {self.dropout!r}")

    def _check_compress(self) -> None:
        if self.compress not in METHODS:
            raise ValueError(f"compress must be one of {', '.join(METHODS)}, got {self.compress!r}")
        if self.compress != "restrict" and self.sharing_rate not in (0, 0.0):
            raise ValueError(
                f"compress={self.compress!r} builds a classical layer; its sharing_rate must be 0"
            )
        if self.compress == "lowrank":
            if self.lowrank not in LOWRANK:
                raise ValueError(f"lowrank must be one of {', '.join(LOWRANK)}, got {self.lowrank!r}")
            sizes.check_rank(self.rank, self.embedding_size, self.hidden_size, self.lowrank)
            if self.tie_weights and self.lowrank == "projection":
                raise ValueError(
                    "tied weights need the decoder to read hidden_size features; a projection "
                    f"gives {self.rank}: use variant 'plain' or --lowrank factors"
                )
        elif self.rank is not None:
            raise ValueError(f"rank is for compress='lowrank', not {self.compress!r}")
        if self.widths is not None:
            if self.compress != "iss" or len(self.widths) != self.layers:
                raise ValueError("widths (a compacted ISS model) needs compress='iss' and one width per layer")
            sizes.stacked_count(self.cell, self.embedding_size, self.widths)

    @property
    def output_size(self) -> int:
        """What the decoder reads: the last layer's width."""
        if self.widths is not None:
            return self.widths[-1]
        if self.compress == "lowrank" and self.lowrank == "projection":
            return self.rank
        return self.hidden_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model config has unknown fields {sorted(unknown)}")
        return cls(**d)


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
