"""Perplexity of a language model on a split: the token-weighted loss over every
window from a zero state, the one number training, ``rrnn eval`` and the reports
print. Imports torch and :mod:`rrnn.lm.data` only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import data as D


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


def json_ppl(loss: float) -> float | None:
    """A perplexity for a JSON file: None where it overflows or the loss is not
    finite (strict JSON has no Infinity or NaN; the loss is written beside it)."""
    if not math.isfinite(loss) or loss >= 700:
        return None
    return math.exp(loss)


@torch.no_grad()
def evaluate(model, source: torch.Tensor, bptt: int, max_batches: int | None = None
             ) -> tuple[float, int]:  # fmt: skip
    """Token-weighted loss over a whole batchified split (``source``: (N, B)),
    including the last short window, from a zero state. Returns ``(sum of losses,
    tokens)``."""
    model.eval()
    hidden = model.init_hidden(source.size(1))
    total, count = 0.0, 0
    for n, i in enumerate(range(0, source.size(0) - 1, bptt)):
        if max_batches is not None and n >= max_batches:
            break
        data, targets = D.get_batch(source, i, bptt)  # (T, B), (T*B,)
        logits, hidden = model(data, hidden)
        total += F.cross_entropy(logits, targets, reduction="sum").item()
        count += targets.numel()
    return total, count


def split_perplexity(model, source, bptt, max_batches=None) -> float:
    total, count = evaluate(model, source, bptt, max_batches)
    return perplexity(total / count)
