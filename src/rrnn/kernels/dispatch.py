"""Which path a call takes: ``kernel="auto"``'s rules, in order, each a function
of the call (:data:`AUTO_RULES`), the pinned paths, and the fixed thresholds of
``RRNN_DISPATCH=static``. The paths: :mod:`rrnn.kernels.paths`; the measured
choice: :mod:`rrnn.kernels.tuning`."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from . import tuning
from .paths import shared_row_forward

KERNELS = ("auto", "reference", "shared-row", "stream")

# Lowest sharing rate at which "auto" takes the shared-row kernel, measured with
# benchmarks/bench_layers.py on a 2-core CPU (B=80, T=35, H=200, L=3; see
# docs/benchmarks.md). LSTM with autograd: 1.02x torch.nn at r = 0.1, 1.15x at
# 0.2; without (inference over a sequence): 0.99x at 0.3, 1.14x at 0.4. The GRU
# kernel beats torch.nn at every rate (r = 0: 1.14x training, 1.03x inference).
# A training call of one time step is different again: torch's oneDNN LSTM has a
# large fixed cost per call (B=1, T=1, r=0: the shared-row LSTM is 1.47x, at B=4
# 1.27x), while at r = 0 the shared-row GRU loses to torch's GRU (0.57x; r = 0.5: 1.54x).
SHARED_ROW_MIN_RATE = {
    "lstm": {"train": 0.15, "inference": 0.35, "train-one-step": 0.0},
    "gru": {"train": 0.0, "inference": 0.0, "train-one-step": 0.05},
}


def uniform_shares(module) -> list[int] | None:
    """Shared rows per layer if every (input, gate) of every layer shares
    equally (so x and h read the same rows), else None."""
    shares = []
    for res in module.restrictions:
        values = {v for row in res.shares for v in row}
        if len(values) != 1:
            return None
        shares.append(values.pop())
    return shares


def supports_shared_row(module, data: Tensor, batch_sizes) -> str | None:
    """None if the shared-row path can run this call, else the reason it cannot."""
    if module.cell not in SHARED_ROW_MIN_RATE:
        return (
            "an RNN has one gate: sharing removes no rows of work, so it has no shared-row kernel"
        )
    if batch_sizes is not None:
        return "packed sequences use the reference path"
    if data.device.type != "cpu":
        return "on CUDA the reference path runs cuDNN"
    if data.dtype not in (torch.float32, torch.float64):
        return f"dtype {data.dtype} is not supported by the shared-row kernel"
    if module.uniform_shares is None:
        return "per-gate sharing-rate tables use the reference path"
    return None


def functorch_active() -> bool:
    """True inside torch.func.grad / vmap / jacrev ... (they cannot see through
    the C kernels, so those calls take the reference path; the fused loss too)."""
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except AttributeError:  # an older torch without functorch
        return False


def _runners(module, x, h) -> dict:
    """What the tuner times (on its own copy of the layer): both paths of one call."""
    return {
        "reference": lambda: module.reference_forward(x, None, h),
        "shared-row": lambda: shared_row_forward(module, x, h),
    }


def _tracing() -> bool:
    """True under torch.jit.trace (and so the TorchScript ONNX exporter) and under
    torch.export: they record operators, not what the C kernels do (torch.compile is
    checked before this, by ``torch.compiler.is_compiling``)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.jit.is_tracing() or exporting()


def _needs_grad(module, data: Tensor, hx) -> bool:
    if not torch.is_grad_enabled():
        return False
    if data.requires_grad or any(p.requires_grad for p in module.parameters(recurse=False)):
        return True
    states = hx if isinstance(hx, tuple) else (hx,)
    return any(h is not None and h.requires_grad for h in states)


# Outside module.frozen() the stream path packs its weights afresh on every call;
# the largest batch for which ``auto`` then streams a one-step call, by cell (a cell
# not listed is not streamed there). Measured (stream against reference, one
# thread, 3 x 200, r = 0.5 and 0.9; docs/kernels.md): the LSTM's stream step wins
# to batch 16 and loses at 32 (0.80x at r = 0.5), the GRU's wins to 32, and the
# plain RNN's loses at every batch (0.84-0.93x). Inside frozen() the packed weights
# are kept and streaming beat the reference path for every cell at every batch
# measured (1 to 32); a GRU at r = 0 too since its stack runs as one operator
# (rrnn::gru_stream; docs/benchmarks.md, "One operator for the GRU's stream step").
STREAM_MAX_BATCH = {"lstm": 16, "gru": 32}


def _stream_pays(module, data: Tensor) -> bool:
    """Whether streaming this one-step call is measured faster than the other paths."""
    if module.stream_cache.frozen:
        return True
    limit = STREAM_MAX_BATCH.get(module.cell)
    if limit is None:
        return False
    batch = data.size(0 if module.batch_first else 1) if data.dim() == 3 else 1
    return batch <= limit


def _gru_without_shared_rows(module, data: Tensor) -> bool:
    """A GRU on CPU whose every layer has 0 shared rows, outside ``frozen()``: packing
    afresh on every call saves no work there, and its stream step measured 436-453 us
    against 241-248 for the reference path (3 x 200, batch 1, one thread); so
    ``auto`` keeps torch's GRU there. Inside ``frozen()`` it streams (221-227 us
    against 235-248: docs/benchmarks.md, "One operator for the GRU's stream step")."""
    shares = module.uniform_shares
    return (
        module.cell == "gru" and data.device.type == "cpu" and shares is not None
        and max(shares, default=0) == 0 and not module.stream_cache.frozen
    )  # fmt: skip


def choose(module, data: Tensor, batch_sizes, steps: int, hx=None) -> str:
    """The path this call takes (see the module docstring)."""
    return explain(module, data, batch_sizes, steps, hx)[0]


def _pinned(module) -> str:
    forced = module.kernel
    if forced == "auto":
        forced = os.environ.get("RRNN_KERNEL", "auto") or "auto"
        if forced not in KERNELS:
            raise ValueError(
                f"RRNN_KERNEL={forced!r} is not a path; use one of {', '.join(KERNELS)}"
            )
    return forced


@dataclass(frozen=True)
class Call:
    """What the rules read of one call."""

    module: object
    data: Tensor
    batch_sizes: Tensor | None
    steps: int
    hx: object
    needs_grad: bool
    drops: bool  # dropout would run (training, dropout > 0, more than one layer)

    @property
    def streamable(self) -> bool:
        """One time step of a plain tensor, no autograd, no dropout: what the stream path runs."""
        return self.steps == 1 and self.batch_sizes is None and not self.needs_grad and not self.drops


def _compiling(c: Call):
    # the fast paths call C kernels on raw data pointers, which tracing cannot follow
    if torch.compiler.is_compiling():
        return "reference", "torch.compile / torch.export trace torch's own operators"


def _traced(c: Call):
    # torch.jit.trace and the TorchScript ONNX exporter record torch's operators; the
    # C paths and the stream cache's stored weights would become constants
    if _tracing():
        return "reference", "torch.jit.trace / torch.onnx.export record torch's own operators"


def _transformed(c: Call):
    if functorch_active():
        return "reference", "torch.func transforms trace torch's own operators"


def _autocast(c: Call):
    # under autocast torch picks each operation's dtype; torch's own kernels follow it
    if torch.is_autocast_enabled(c.data.device.type):
        return "reference", "under autocast torch's own kernels choose the dtypes"


def _gru_step_without_sharing(c: Call):
    if c.steps == 1 and _gru_without_shared_rows(c.module, c.data):
        return "reference", ("outside frozen(), a GRU without shared rows streams slower than "
                             "torch's own GRU (it packs its weights at every call; "
                             "docs/benchmarks.md)")  # fmt: skip


def _stream(c: Call):
    if c.streamable and _stream_pays(c.module, c.data):
        return "stream", "one time step without autograd or dropout"


def _no_shared_row(c: Call):
    why_not = supports_shared_row(c.module, c.data, c.batch_sizes)
    if why_not is not None:
        return "reference", why_not


def _measured(c: Call):
    if tuning.enabled() and not tuning.measuring():
        return tuning.decide(c.module, c.data, c.hx, c.steps, c.needs_grad, _runners)


def _static(c: Call):
    module = c.module
    rate = min(module.uniform_shares) / module.hidden_size
    kind = "inference" if not c.needs_grad else ("train-one-step" if c.steps == 1 else "train")
    limit = SHARED_ROW_MIN_RATE[module.cell][kind]
    path = "shared-row" if rate >= limit else "reference"
    return path, (
        f"RRNN_DISPATCH=static: sharing rate {rate:.3g} {'>=' if rate >= limit else '<'} "
        f"the fixed threshold {limit} for {module.cell} {kind}"
    )


# ``kernel="auto"``: the first rule that answers decides (path, why); the last always does
AUTO_RULES = (_compiling, _traced, _transformed, _autocast, _gru_step_without_sharing,
              _stream, _no_shared_row, _measured, _static)  # fmt: skip


def explain(module, data: Tensor, batch_sizes, steps: int, hx=None) -> tuple[str, str]:
    """(path, why) for this call."""
    forced = _pinned(module)
    pin = "" if module.kernel != "auto" else " (RRNN_KERNEL)"
    if forced == "reference":
        return "reference", f"pinned{pin or ' (module.kernel)'}"
    # the streaming step has no dropout: in training mode with dropout it never runs
    drops = module.training and module.dropout > 0 and module.num_layers > 1
    call = Call(module, data, batch_sizes, steps, hx, _needs_grad(module, data, hx), drops)
    if forced == "stream":
        if not call.streamable:
            raise ValueError(
                "kernel='stream' cannot run this call: it needs one time step of a plain "
                "tensor, no autograd (torch.no_grad() or requires_grad=False) and no "
                "dropout (eval mode, or dropout=0)"
            )
        return "stream", "pinned"
    if forced == "shared-row":
        why_not = supports_shared_row(module, data, batch_sizes)
        if why_not is not None:
            raise ValueError(f"kernel='shared-row' cannot run this call: {why_not}")
        return "shared-row", f"pinned{pin or ' (module.kernel)'}"
    for rule in AUTO_RULES:
        decided = rule(call)
        if decided is not None:
            return decided
    raise AssertionError("the last rule always decides")


