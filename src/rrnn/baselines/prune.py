"""Gradual magnitude pruning during training.

Two schedules, both with one binary mask per weight matrix (biases are never
pruned), masks that only shrink, and the masks applied after every optimizer step:

- ``"narang"`` (Narang et al. 2017, arXiv 1704.05119): every ``freq`` iterations
  from ``start`` to ``end`` the threshold of each matrix kind (input, recurrent)
  becomes :func:`narang_threshold`, and weights with ``|w| < eps`` are masked.
  ``q``, the magnitude at the target-sparsity percentile, is read from the weights
  of its kind at iteration ``start`` (the model trained so far). The thresholds
  only approximately meet the target.
- ``"cubic"`` (Zhu and Gupta 2017): every ``freq`` iterations each matrix keeps its
  largest-magnitude entries so that its sparsity is :func:`cubic_sparsity`, which
  reaches the target exactly at ``end``.

After ``end`` the masks stay fixed. Usage with any model holding torch.nn
RNN/GRU/LSTM layers::

    pruner = GradualPruner(model, sparsity=0.8, start=1000, end=5000)
    for batch in data:
        loss.backward(); optimizer.step()
        pruner.step()           # counts iterations, prunes on schedule, re-applies masks
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from .sizes import SCHEDULES, check_sparsity  # noqa: F401  re-exported


def narang_threshold(
    itr: int, q: float, start: int, ramp: int, end: int, freq: int
) -> float | None:
    """Narang et al.'s threshold at iteration ``itr``, or None where ``itr`` is not
    a pruning iteration (outside ``[start, end]`` or not a multiple of ``freq``
    from ``start``)::

        theta = 2 q freq / (2 (ramp - start) + 3 (end - ramp)),  phi = 1.5 theta
        eps = theta (itr - start + 1) / freq                                   itr < ramp
        eps = (theta (ramp - start + 1) + phi (itr - ramp + 1)) / freq         itr >= ramp
    """
    check_schedule(start, ramp, end, freq)
    if not start <= itr <= end or (itr - start) % freq:
        return None
    theta = 2.0 * q * freq / (2.0 * (ramp - start) + 3.0 * (end - ramp))
    phi = 1.5 * theta
    if itr < ramp:
        return theta * (itr - start + 1) / freq
    return (theta * (ramp - start + 1) + phi * (itr - ramp + 1)) / freq


def cubic_sparsity(itr: int, target: float, start: int, end: int, freq: int) -> float | None:
    """Zhu and Gupta's sparsity at ``itr``: ``target (1 - (1 - (itr - start) / (end - start))^3)``
    at pruning iterations, None elsewhere; exactly ``target`` at ``end``."""
    check_schedule(start, start, end, freq)
    if not start <= itr <= end:
        return None
    if itr != end and (itr - start) % freq:
        return None
    frac = (itr - start) / max(end - start, 1)
    return target * (1.0 - (1.0 - frac) ** 3)


def check_schedule(start: int, ramp: int, end: int, freq: int) -> None:
    for name, v in (("start", start), ("ramp", ramp), ("end", end)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"pruning {name} must be an iteration >= 0, got {v!r}")
    if isinstance(freq, bool) or not isinstance(freq, int) or freq <= 0:
        raise ValueError(f"pruning freq must be a positive integer, got {freq!r}")
    if not start <= ramp <= end or start == end:
        raise ValueError(
            f"pruning needs start <= ramp <= end and start < end, got start={start}, "
            f"ramp={ramp}, end={end}"
        )


def prunable(model: nn.Module) -> dict[str, tuple[str, Tensor]]:
    """``{name: (kind, parameter)}`` for the weight matrices of every recurrent
    layer in ``model``: ``weight_ih*`` is kind "input", ``weight_hh*`` and
    ``weight_hr*`` (an LSTM projection) kind "recurrent". Biases are left out."""
    out = {}
    for mname, module in model.named_modules():
        if not isinstance(module, nn.RNNBase):
            continue
        for pname, p in module.named_parameters(recurse=False):
            kind = ("input" if pname.startswith("weight_ih")
                    else "recurrent" if pname.startswith(("weight_hh", "weight_hr")) else None)  # fmt: skip
            if kind:
                out[f"{mname}.{pname}" if mname else pname] = (kind, p)
    if not out:
        raise ValueError(
            "no torch.nn RNN/GRU/LSTM weight matrices to prune in this model (pruning works "
            "on torch.nn recurrent layers; build the model with them, e.g. backend='torch')"
        )
    return out


class GradualPruner:
    """Masks for the recurrent weight matrices of ``model`` on a pruning schedule.

    ``start``, ``ramp`` and ``end`` are iteration numbers (calls of :meth:`step`,
    counted from 0); ``ramp`` is used by the "narang" schedule only.
    """

    def __init__(self, model: nn.Module, sparsity: float, start: int, end: int,
                 ramp: int | None = None, freq: int = 100, schedule: str = "narang") -> None:  # fmt: skip
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.sparsity = check_sparsity(sparsity)
        ramp = start + (end - start) // 2 if ramp is None else ramp
        check_schedule(start, ramp, end, freq)
        self.start, self.ramp, self.end, self.freq, self.schedule = start, ramp, end, freq, schedule
        self.params = prunable(model)
        self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, (_, p) in self.params.items()}
        self.q: dict[str, float] = {}
        self.itr = 0
        self.thresholds: dict[str, float] = {}

    @torch.no_grad()
    def step(self) -> None:
        """Call once after every ``optimizer.step()``."""
        itr = self.itr
        if self.schedule == "narang":
            if itr == self.start:
                self.q = self._quantiles()
            if self.q:
                for kind, q in self.q.items():
                    eps = narang_threshold(itr, q, self.start, self.ramp, self.end, self.freq)
                    if eps is not None:
                        self.thresholds[kind] = eps
                        for name, (k, p) in self.params.items():
                            if k == kind:
                                self.masks[name] &= p.abs() >= eps
        else:
            target = cubic_sparsity(itr, self.sparsity, self.start, self.end, self.freq)
            if target is not None:
                for name, (_, p) in self.params.items():
                    self.masks[name] = _keep_largest(p, self.masks[name], target)
        self.apply()
        self.itr = itr + 1

    @torch.no_grad()
    def apply(self) -> None:
        for name, (_, p) in self.params.items():
            p.mul_(self.masks[name])

    def _quantiles(self) -> dict[str, float]:
        out = {}
        for kind in ("input", "recurrent"):
            values = [p.detach().abs().flatten() for k, p in self.params.values() if k == kind]
            if values:
                flat = torch.cat(values).float()
                k = max(1, min(flat.numel(), math.ceil(self.sparsity * flat.numel())))
                out[kind] = float(flat.kthvalue(k).values) if self.sparsity > 0 else 0.0
        return out

    def density(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept / sum(m.numel() for m in self.masks.values())

    def state_dict(self) -> dict:
        return {"itr": self.itr, "q": dict(self.q), "thresholds": dict(self.thresholds),
                "masks": {n: m.clone() for n, m in self.masks.items()}}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        if set(state["masks"]) != set(self.masks):
            raise ValueError(
                f"pruning state is for other matrices ({sorted(state['masks'])}); "
                f"this model has {sorted(self.masks)}"
            )
        for n, m in state["masks"].items():
            if m.shape != self.masks[n].shape:
                raise ValueError(f"pruning mask {n} has shape {tuple(m.shape)}, the matrix "
                                 f"{tuple(self.masks[n].shape)}")  # fmt: skip
            self.masks[n] = m.to(self.masks[n].device, torch.bool)
        self.itr, self.q, self.thresholds = (
            int(state["itr"]),
            dict(state["q"]),
            dict(state["thresholds"]),
        )
        self.apply()


def _keep_largest(p: Tensor, mask: Tensor, sparsity: float) -> Tensor:
    """The mask keeping the ``round((1 - sparsity) * n)`` largest |p| among the
    entries ``mask`` still keeps (so that masks only shrink)."""
    keep = min(int(mask.sum()), round((1.0 - sparsity) * p.numel()))
    score = torch.where(mask, p.detach().abs(), torch.full_like(p, -1.0)).flatten()
    new = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
    if keep > 0:
        new[score.topk(keep, sorted=False).indices] = True
    return new.view_as(mask)


def sparse_weights(model: nn.Module) -> dict[str, Tensor]:
    """The pruned matrices in CSR form (what a pruned model stores: its nonzero
    values with their column indices and row pointers)."""
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
        return {n: p.detach().to_sparse_csr() for n, (_, p) in prunable(model).items()}


def stored_count(model: nn.Module) -> tuple[int, int]:
    """(nonzero weight values, index entries) of the CSR form of the prunable matrices."""
    values = indices = 0
    for w in sparse_weights(model).values():
        values += w.values().numel()
        indices += w.col_indices().numel() + w.crow_indices().numel()
    return values, indices
