"""Speed of restricted layers as ratios to torch.nn of the same size, in one run.

Both implementations are timed interleaved (A, B, A, B, ...) after a warm-up,
so drift of the machine (frequency, other load) hits both alike; the figure
reported is the ratio of medians. A ratio above 1 means rrnn is faster.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import modules

LAYER = {"rnn": modules.RestrictedRNN, "gru": modules.RestrictedGRU, "lstm": modules.RestrictedLSTM}
TORCH = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class Case:
    mode: str
    rate: float
    batch: int
    steps: int
    hidden: int
    layers: int
    input_size: int | None = None  # defaults to hidden

    @property
    def label(self) -> str:
        return f"{self.mode} r={self.rate:g} B={self.batch} T={self.steps} H={self.hidden} L={self.layers}"


def interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed alternately."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _make(case: Case, device, dtype):
    k = case.input_size or case.hidden
    ours = LAYER[case.mode](
        k, case.hidden, case.layers, sharing_rate=case.rate, device=device, dtype=dtype
    )
    theirs = TORCH[case.mode](k, case.hidden, case.layers, device=device, dtype=dtype)
    x = torch.randn(case.steps, case.batch, k, device=device, dtype=dtype)
    return ours, theirs, x


def _step(module, x, backward: bool):
    def run():
        if backward:
            module.zero_grad(set_to_none=True)
            out, _ = module(x)
            out.sum().backward()
        else:
            with torch.no_grad():
                module(x)
        if x.is_cuda:
            torch.cuda.synchronize()

    return run


def bench_case(
    case: Case,
    backward: bool = True,
    repeats: int = 20,
    warmup: int = 3,
    device="cpu",
    dtype=torch.float32,
) -> dict:
    ours, theirs, x = _make(case, device, dtype)
    times = interleaved(
        {"torch": _step(theirs, x, backward), "rrnn": _step(ours, x, backward)}, repeats, warmup
    )
    t_torch = statistics.median(times["torch"])
    t_ours = statistics.median(times["rrnn"])
    tokens = case.batch * case.steps
    return {
        **asdict(case),
        "pass": "forward+backward" if backward else "forward",
        "torch_s": t_torch,
        "rrnn_s": t_ours,
        "torch_tokens_per_s": tokens / t_torch,
        "rrnn_tokens_per_s": tokens / t_ours,
        "speedup": t_torch / t_ours,
        "repeats": repeats,
    }


def bench_lm(
    cell: str = "lstm",
    rate: float = 0.0,
    vocab: int = 10_000,
    batch: int = 80,
    bptt: int = 35,
    size: int = 200,
    layers: int = 3,
    repeats: int = 20,
    warmup: int = 3,
) -> dict:
    """Training tokens/s of the paper's language model (embedding, recurrent
    stack, decoder, SGD step with clipping) with a restricted layer against the
    same model with a plain torch.nn layer, timed interleaved."""
    import torch.nn.functional as F

    from .lm.model import ModelConfig, RNNModel

    torch.manual_seed(0)
    models = {
        "torch": RNNModel(ModelConfig(vocab, cell, 0.0, layers, size, size, backend="torch")),
        "rrnn": RNNModel(ModelConfig(vocab, cell, rate, layers, size, size)),
    }
    optims = {
        k: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)
        for k, m in models.items()
    }
    data = torch.randint(vocab, (bptt, batch))  # (T, B)
    targets = torch.randint(vocab, (bptt * batch,))  # (T*B,)
    hidden = {k: m.init_hidden(batch) for k, m in models.items()}

    def step(name):
        model, opt = models[name], optims[name]

        def run():
            opt.zero_grad(set_to_none=True)
            logits, _ = model(data, hidden[name])
            F.cross_entropy(logits, targets).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()

        return run

    times = interleaved({k: step(k) for k in models}, repeats, warmup)
    t_torch, t_ours = statistics.median(times["torch"]), statistics.median(times["rrnn"])
    tokens = batch * bptt
    return {
        "cell": cell,
        "rate": rate,
        "vocab": vocab,
        "batch": batch,
        "bptt": bptt,
        "size": size,
        "layers": layers,
        "repeats": repeats,
        "torch_tokens_per_s": tokens / t_torch,
        "rrnn_tokens_per_s": tokens / t_ours,
        "ratio": t_torch / t_ours,
    }
