"""Torch-op version of ``rrnn::softmax_xent_`` (used where no C compiler was found,
and off the CPU).

Same arithmetic as ``rrnn_xent_*`` in ``cells.c``: for each row ``x`` of a
``(n, V)`` block with target ``y`` and bias ``b`` (or none),
``loss = logsumexp(x + b) - (x + b)[y]`` (float64) and, in place,
``x <- (softmax(x + b) - onehot(y)) * scale``; ``dbias += sum of the new rows``.
"""

from __future__ import annotations

from torch import Tensor


def softmax_xent_ops(
    logits: Tensor, target: Tensor, bias: Tensor | None, loss: Tensor, dbias: Tensor | None,
    scale: float,
) -> None:  # fmt: skip
    if bias is not None:
        logits.add_(bias)
    picked = logits.gather(1, target.unsqueeze(1)).squeeze(1)  # (n,)
    mx = logits.amax(1, keepdim=True)  # (n, 1)
    e = logits.sub_(mx).exp_()  # (n, V), in place
    total = e.sum(1)  # (n,)
    loss.copy_(mx.squeeze(1).double() + total.double().log() - picked.double())
    e.mul_((scale / total).unsqueeze(1))
    e.scatter_add_(1, target.unsqueeze(1), e.new_full((target.numel(), 1), -scale))
    if dbias is not None:
        dbias.add_(e.sum(0))
