"""The decoder and the cross-entropy in one chunked pass.

``F.cross_entropy(F.linear(h, W, b), y)`` over ``N = T*B`` rows and a vocabulary of
``V`` materialises the ``(N, V)`` logits, then its log-softmax, then in backward
the gradient of each: several passes over 2800 x 10,000 floats per PTB batch.
:func:`linear_cross_entropy` walks the rows in chunks instead: per chunk it forms the
logits in one reused ``(c, V)`` block, turns them in place into the rows' losses and
the gradient ``(softmax - onehot) / N`` (``rrnn::softmax_xent_``: three passes over
each row while it is in cache, on all of torch's threads), and takes its products
with ``h`` and ``W`` (the same three GEMMs as the unfused pair), so that no
``(N, V)`` tensor exists. Backward only scales the stored
gradients by the incoming one. Values equal the unfused pair within float32
rounding; a tied decoder (``W`` is the embedding) gets its gradient as any
parameter does. Double backward raises (``once_differentiable``).

::

    rows of h (N = T*B)          per chunk of c rows (at most 768)
    +--------------+             logits = h_c W^T + b            (c, V)
    | chunk 0      |  ------>    lse    = logsumexp(logits)      (c,)
    | chunk 1      |             loss_c = lse - logits[y]        (c,)
    | ...          |             g      = (exp(logits - lse) - onehot(y)) / N, in place
    +--------------+             dh_c = g W,  dW += g^T h_c,  db += sum(g)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..kernels import functorch_active, ops
from ..kernels.xent import softmax_xent_ops
from .config import PRECISIONS

DEFAULT_CHUNK = 768  # PTB's 2800 rows: 4 chunks of 700 (measured: docs/benchmarks.md)


def _softmax_xent_(logits, target, bias, loss, dbias, scale: float) -> None:
    """Per-row loss into ``loss``, the logits block (bias not yet added) in place into
    ``(softmax - onehot) * scale``, and its column sums added to ``dbias``: the
    compiled operator on CPU in float32/float64, the same arithmetic in torch ops
    elsewhere."""
    if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64):
        ops.softmax_xent_(logits, target, bias, loss, dbias, scale)
    else:
        softmax_xent_ops(logits, target, bias, loss, dbias, scale)


def without_subnormals(t: Tensor) -> Tensor:
    """``t``, or where a float32/float64 CPU tensor holds subnormal numbers, a copy
    with them set to 0 (see :func:`linear_cross_entropy`, "Subnormal inputs")."""
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return t
    small = (t.abs() < torch.finfo(t.dtype).tiny) & (t != 0)  # NaN compares False: kept
    return t.masked_fill(small, 0) if bool(small.any()) else t


class _GEMMs:
    """The three products of a chunk, in the operands' float32 or with bfloat16
    operands (``low``): the GEMMs then take bfloat16 copies of h and W (made once
    per call) and of each chunk's gradient block, and their results are added in
    float32; the loss rows and the softmax stay in float32."""

    def __init__(self, h: Tensor, weight: Tensor, rows: int, low: bool):
        self.low = low
        h = without_subnormals(h)  # (N, H)
        self.h = h.to(torch.bfloat16) if low else h
        self.w = weight.to(torch.bfloat16) if low else weight  # (V, H)
        if low:
            self.block = h.new_empty(rows, weight.size(0), dtype=torch.bfloat16)  # (c, V)
            self.small = h.new_empty(rows, h.size(1), dtype=torch.bfloat16)  # (c, H)
            self.dw = torch.empty_like(self.w)  # (V, H)

    def logits(self, i: int, j: int, out: Tensor) -> Tensor:
        """out (c, V) = h[i:j] W^T, in float32."""
        if not self.low:
            return torch.mm(self.h[i:j], self.w.t(), out=out)
        return out.copy_(torch.mm(self.h[i:j], self.w.t(), out=self.block[: j - i]))

    def grads(self, g: Tensor, i: int, j: int, dh: Tensor | None, dw: Tensor | None) -> None:
        """dh[i:j] = g W and dw (+)= g^T h[i:j] for the chunk's gradient block g (c, V)."""
        if self.low:
            g = self.block[: j - i].copy_(g)
        if dh is not None:
            if self.low:
                dh[i:j].copy_(torch.mm(g, self.w, out=self.small[: j - i]))
            else:
                torch.mm(g, self.w, out=dh[i:j])  # (c, H)
        if dw is not None:
            if self.low:
                part = torch.mm(g.t(), self.h[i:j], out=self.dw)  # (V, H)
                dw.copy_(part) if i == 0 else dw.add_(part)
            elif i == 0:
                torch.mm(g.t(), self.h[i:j], out=dw)  # (V, H)
            else:
                dw.addmm_(g.t(), self.h[i:j])


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, target, chunk, want, low):
        n = h.size(0)
        need = (
            want and h.requires_grad,
            want and weight.requires_grad,
            want and bias is not None and bias.requires_grad,
        )
        row_loss = h.new_empty(n, dtype=torch.float64)  # (N,)
        dh = torch.empty_like(h) if need[0] else None
        dw = torch.empty_like(weight) if need[1] else None
        db = torch.zeros_like(bias) if need[2] else None
        chunk = -(-n // -(-n // chunk))  # as many chunks as needed, of equal size: no thin tail
        block = h.new_empty(min(chunk, n), weight.size(0))  # (c, V), reused by every chunk
        gemm = _GEMMs(h, weight, block.size(0), low)
        for i in range(0, n, chunk):
            j = min(i + chunk, n)
            logits = gemm.logits(i, j, block[: j - i])  # (c, V), bias added below
            # loss per row; the block becomes (softmax - onehot) / N; db += its column sums
            _softmax_xent_(logits, target[i:j], bias, row_loss[i:j], db, 1.0 / n)
            gemm.grads(logits, i, j, dh, dw)
        ctx.grads = (dh, dw, db)  # intermediate results, freed with the graph
        return (row_loss.sum() / n).to(h.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        dh, dw, db = ctx.grads
        scale = lambda t: None if t is None else t * grad_loss  # noqa: E731
        return scale(dh), scale(dw), scale(db), None, None, None, None




def linear_cross_entropy(
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    chunk: int = DEFAULT_CHUNK,
    precision: str = "fp32",
) -> Tensor:
    """``F.cross_entropy(F.linear(h, weight, bias), target)`` (mean over rows),
    computed in chunks of at most ``chunk`` rows (equal sizes). ``h`` (N, H),
    ``weight`` (V, H), ``bias`` (V,) or None, ``target`` (N,) int64 class indices
    (no ignore_index, no weights). ``precision="bf16"`` runs the three GEMMs on
    bfloat16 copies of their float32 operands (faster where the CPU has bfloat16
    instructions, or on a GPU; the softmax, the loss and every result stay float32,
    with the rounding of bfloat16 products, as under ``torch.autocast``).

    Subnormal inputs: on the CPU, entries of a float32/float64 ``h`` smaller in
    magnitude than the dtype's smallest normal number (1.2e-38 in float32) enter the
    GEMMs as 0; ``h`` itself is not changed, and its gradient does not depend on its
    values. An LSTM unit whose output gate is shut emits such values, and each
    entry of ``h`` is read by all ``V`` columns of the decoder, so a few of them
    made this function's GEMMs about twice as slow on an Intel Xeon
    (docs/benchmarks.md, "Subnormal hidden states"). What they would add to a
    logit or to ``weight``'s gradient lies below float32's resolution of any sum
    that holds a normal number."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if h.dim() != 2 or weight.dim() != 2 or h.size(1) != weight.size(1):
        raise ValueError(
            f"linear_cross_entropy needs h (N, H) and weight (V, H), got "
            f"{tuple(h.shape)} and {tuple(weight.shape)}"
        )
    if target.shape != (h.size(0),) or target.dtype != torch.long:
        raise ValueError(
            f"target must be int64 of shape ({h.size(0)},), got {target.dtype} {tuple(target.shape)}"
        )
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if h.size(0) == 0:
        raise ValueError("linear_cross_entropy needs at least one row")
    if torch.is_autocast_enabled(h.device.type) or functorch_active():
        # autocast picks the dtypes of torch's own operators (h may come in bfloat16
        # beside a float32 weight), and torch.func transforms trace them: take the
        # unfused pair there
        return F.cross_entropy(F.linear(h, weight, bias), target)
    if h.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise ValueError(
            f"h, weight and bias must share a dtype, got {h.dtype}, {weight.dtype} and "
            f"{None if bias is None else bias.dtype}"
        )
    low = precision == "bf16" and h.dtype == torch.float32
    with torch.no_grad():
        if target.min() < 0 or target.max() >= weight.size(0):
            raise ValueError(f"target holds a class outside [0, {weight.size(0)})")
    want = torch.is_grad_enabled()
    return _LinearCrossEntropy.apply(
        h.contiguous(), weight, bias, target.contiguous(), chunk, want, low
    )
