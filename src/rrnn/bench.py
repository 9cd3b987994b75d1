"""Speed of restricted layers as ratios to torch.nn of the same size, in one run.

Both implementations are timed interleaved (A, B, A, B, ...) after a warm-up,
so drift of the machine (frequency, other load) hits both alike; the figure
reported is the ratio of medians. A ratio above 1 means rrnn is faster.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from . import modules
from .timing import interleaved  # noqa: F401  (rrnn.bench.interleaved, as before)
from .torch_classes import TORCH_LAYERS

LAYER = {"rnn": modules.RestrictedRNN, "gru": modules.RestrictedGRU, "lstm": modules.RestrictedLSTM}


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


def _make(case: Case, device, dtype):
    k = case.input_size or case.hidden
    ours = LAYER[case.mode](
        k, case.hidden, case.layers, sharing_rate=case.rate, device=device, dtype=dtype
    )
    theirs = TORCH_LAYERS[case.mode](k, case.hidden, case.layers, device=device, dtype=dtype)
    x = torch.randn(case.steps, case.batch, k, device=device, dtype=dtype)
    h = torch.zeros(case.layers, case.batch, case.hidden, device=device, dtype=dtype)
    hx = (h, h.clone()) if case.mode == "lstm" else h
    return ours, theirs, x, hx


def _step(module, x, hx, backward: bool):
    def run():
        if backward:
            module.zero_grad(set_to_none=True)
            out, _ = module(x, hx)
            out.sum().backward()
        else:
            with torch.no_grad():
                module(x, hx)
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
    block: int = 1,
) -> dict:
    """One (case, pass): median seconds per call of torch.nn and rrnn."""
    ours, theirs, x, hx = _make(case, device, dtype)
    ours.train(backward)
    theirs.train(backward)
    ref = copy.deepcopy(ours)  # the same weights on the reference path
    ref.kernel = "reference"
    # inference runs as documented for it: inside frozen(), where one-step calls
    # keep their packed weights (outside, each call packs them afresh); the path is
    # read there too, since auto may choose differently inside
    with contextlib.nullcontext() if backward else ours.frozen():
        path = ours.path_for(x, hx) if backward else _path_no_grad(ours, x, hx)  # may tune first
        times = interleaved(
            {
                "torch": _step(theirs, x, hx, backward),
                "rrnn": _step(ours, x, hx, backward),
                "reference": _step(ref, x, hx, backward),
            },
            repeats,
            warmup,
            block,
        )
    t_torch = statistics.median(times["torch"])
    t_ours = statistics.median(times["rrnn"])
    t_ref = statistics.median(times["reference"])
    tokens = case.batch * case.steps
    return {
        **asdict(case),
        "pass": "forward+backward" if backward else "forward",
        "path": path,
        "torch_s": t_torch,
        "rrnn_s": t_ours,
        "torch_tokens_per_s": tokens / t_torch,
        "rrnn_tokens_per_s": tokens / t_ours,
        "speedup": t_torch / t_ours,
        "speedup_iqr": _iqr([a / b for a, b in zip(times["torch"], times["rrnn"])]),
        "reference_s": t_ref,
        "auto_vs_reference": t_ref / t_ours,  # > 1: the chosen path beats the reference
        "auto_vs_reference_iqr": _iqr([a / b for a, b in zip(times["reference"], times["rrnn"])]),
        "repeats": repeats,
        "block": block,
    }


def _iqr(values: list[float]) -> tuple[float, float]:
    """(25th, 75th) percentile of per-repeat ratios: the spread a reader needs to
    tell a gain from noise."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return (q[0], q[2])


def _path_no_grad(module, x, hx) -> str:
    with torch.no_grad():
        return module.path_for(x, hx)


#: The grid of issue 4: (name, batch, steps, hidden, layers)
SIZES = {
    "paper": (80, 35, 200, 3),
    "large": (20, 35, 650, 2),
    "stream": (1, 1, 200, 3),
}


def run_grid(
    cells=("rnn", "gru", "lstm"),
    rates=(0.0, 0.5, 0.9),
    sizes=tuple(SIZES),
    repeats: int = 10,
    stream_repeats: int = 30,
    stream_block: int = 20,
    log=print,
    device="cpu",
) -> list[dict]:
    """Every (size, cell, rate): forward+backward and forward-only, each timed
    against torch.nn in this run. The streaming size is timed in blocks of
    ``stream_block`` consecutive calls. Returns one record per (case, pass)."""
    plan = [(size, cell, rate) for size in sizes for cell in cells for rate in rates]
    records: list[dict] = []
    start = time.perf_counter()
    for n, (size, cell, rate) in enumerate(plan, 1):
        batch, steps, hidden, layers = SIZES[size]
        case = Case(cell, rate, batch, steps, hidden, layers)
        reps = stream_repeats if size == "stream" else repeats
        block = stream_block if size == "stream" else 1
        for backward in (True, False):
            r = bench_case(
                case, backward=backward, repeats=reps, warmup=2, block=block, device=device
            )
            r["size"] = size
            r["latency_torch_s"] = r["torch_s"] / steps  # per token step, whole batch
            r["latency_rrnn_s"] = r["rrnn_s"] / steps
            records.append(r)
        elapsed = time.perf_counter() - start
        eta = elapsed / n * (len(plan) - n)
        train, infer = records[-2], records[-1]
        log(
            f"[{n}/{len(plan)}] {size:<6} {case.label:<40} train {train['speedup']:.2f}x "
            f"({train['path']}, {train['auto_vs_reference']:.2f}x reference), forward "
            f"{infer['speedup']:.2f}x ({infer['path']}, {infer['auto_vs_reference']:.2f}x reference) "
            f"| {elapsed:.0f}s elapsed, eta {eta:.0f}s"
        )
    return records


def markdown(records: list[dict]) -> str:
    """One row per (size, cell, rate): the three ratios to torch.nn."""
    rows = {}
    for r in records:
        key = (r["size"], r["mode"], r["rate"])
        rows.setdefault(key, {})[r["pass"]] = r
    lines = [
        "| size | cell | r | train tokens/s vs torch.nn (IQR) | forward tokens/s vs torch.nn "
        "(IQR) | latency per token vs torch.nn | torch.nn latency | path (train / forward) | "
        "chosen path vs reference path (train / forward) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (size, mode, rate), passes in rows.items():
        tr, fw = passes["forward+backward"], passes["forward"]
        b, t, h, layers = SIZES[size]
        lines.append(
            f"| {size} (B={b}, T={t}, H={h}, L={layers}) | {mode.upper()} | {rate:g} | "
            f"{tr['speedup']:.2f}x ({_span(tr['speedup_iqr'])}) | "
            f"{fw['speedup']:.2f}x ({_span(fw['speedup_iqr'])}) | "
            f"{fw['latency_rrnn_s'] / fw['latency_torch_s']:.2f}x | "
            f"{fw['latency_torch_s'] * 1e6:,.0f} us | {tr['path']} / {fw['path']} | "
            f"{tr['auto_vs_reference']:.2f}x / {fw['auto_vs_reference']:.2f}x |"
        )
    return "\n".join(lines)


def _span(iqr) -> str:
    return f"{iqr[0]:.2f}-{iqr[1]:.2f}"


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
    loss: str = "fused",
    parts: bool = True,
    precision: str = "fp32",
) -> dict:
    """Training tokens/s of the paper's language model (embedding, recurrent
    stack, decoder, cross-entropy, SGD step with clipping) with a restricted layer
    and ``loss`` ("fused": :func:`rrnn.lm.loss.linear_cross_entropy`; "torch":
    ``F.cross_entropy``) against the same model with a plain torch.nn layer and
    ``F.cross_entropy``, timed interleaved; ``precision="bf16"`` gives the rrnn model's
fused decoder bfloat16 GEMMs (the torch.nn model stays float32). With ``parts``, also the milliseconds of
    the recurrent stack's forward+backward and of the decoder+loss forward+backward
    of each."""

    from .lm.model import ModelConfig, RNNModel

    torch.manual_seed(0)
    models = {
        "torch": RNNModel(ModelConfig(vocab, cell, 0.0, layers, size, size, backend="torch")),
        "rrnn": RNNModel(ModelConfig(vocab, cell, rate, layers, size, size)),
    }
    losses = {"torch": "torch", "rrnn": loss}
    if precision != "fp32" and loss != "fused":
        raise ValueError("precision bf16 applies to the fused loss only")
    precision = {"torch": "fp32", "rrnn": precision}
    data = torch.randint(vocab, (bptt, batch))  # (T, B)
    targets = torch.randint(vocab, (bptt * batch,))  # (T*B,)
    hidden = {k: m.init_hidden(batch) for k, m in models.items()}
    steps = {k: _lm_step(m, data, targets, hidden[k], losses[k], precision[k]) for k, m in models.items()}
    times = interleaved(steps, repeats, warmup)
    t_torch, t_ours = statistics.median(times["torch"]), statistics.median(times["rrnn"])
    tokens = batch * bptt
    result = {
        "cell": cell,
        "rate": rate,
        "vocab": vocab,
        "batch": batch,
        "bptt": bptt,
        "size": size,
        "layers": layers,
        "repeats": repeats,
        "loss": loss,
        "precision": precision["rrnn"],
        "threads": torch.get_num_threads(),
        "torch_tokens_per_s": tokens / t_torch,
        "rrnn_tokens_per_s": tokens / t_ours,
        "ratio": t_torch / t_ours,
        "ratio_iqr": _iqr([a / b for a, b in zip(times["torch"], times["rrnn"])]),
    }
    if parts:
        result["parts_ms"] = {
            k: _lm_parts(m, data, targets, hidden[k], losses[k], repeats, warmup, precision[k])
            for k, m in models.items()
        }
    return result


def _lm_step(model, data, targets, hidden, loss: str, precision: str):
    """One training step of ``model`` (SGD with momentum and clipping, as rrnn
    train's), as a call to time."""
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)

    def run():
        opt.zero_grad(set_to_none=True)
        if loss == "fused":
            value, _ = model(data, hidden, targets=targets, precision=precision)
        else:
            logits, _ = model(data, hidden)
            value = F.cross_entropy(logits, targets)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    return run


def _lm_parts(model, data, targets, hidden, loss, repeats, warmup, precision="fp32") -> dict:
    """Median ms of the recurrent stack's forward+backward and of the decoder +
    cross-entropy's forward+backward, each on its own."""
    import torch.nn.functional as F

    from .lm.loss import linear_cross_entropy

    emb = model.encoder(data).detach().requires_grad_()  # (T, B, E)
    out, _ = model.rnn(emb, hidden)
    grad_out = torch.randn_like(out)
    flat = out.detach().reshape(-1, out.size(-1)).requires_grad_()  # (T*B, H)
    w, b = model.decoder.weight, model.decoder.bias

    def recurrent():
        o, _ = model.rnn(emb, hidden)
        torch.autograd.grad(o, [emb, *model.rnn.parameters()], grad_out)

    def decoder():
        if loss == "fused":
            value = linear_cross_entropy(flat, w, b, targets, precision=precision)
        else:
            value = F.cross_entropy(F.linear(flat, w, b), targets)
        torch.autograd.grad(value, [flat, w, b])

    times = interleaved({"recurrent": recurrent, "decoder_and_loss": decoder}, repeats, warmup)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}
