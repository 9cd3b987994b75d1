"""Whole language models in ExecuTorch (XNNPACK): trained checkpoints, each lowered
as ``rrnn export --format executorch`` lowers it.

Each checkpoint becomes its streaming generator (:class:`rrnn.lm.export.StreamingLM`:
tokens and state in, logits and state out, the recurrent stack in its export form)
for B streams and ``--window`` tokens per call, lowered with the XNNPACK partitioner
and run by the ExecuTorch runtime. The programs are timed interleaved (medians of
blocks of calls); each row gives the program's bytes (the weights it carries), its
latency per call and both as ratios to the first checkpoint given (pass the
reference, e.g. the classical LSTM, first), and the largest logit difference from
PyTorch on a random state and tokens.

    pip install executorch        # not an rrnn dependency: this benchmark only
    python benchmarks/bench_executorch_lm.py REFERENCE/best.pt OTHER/best.pt ... \\
        [--batch 1,16] [--window 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from rrnn.fileio import atomic_write_text, describe_machine, machine
from rrnn.lm.checkpoint import load_checkpoint, model_from_checkpoint
from rrnn.lm.export import StreamingLM, executorch_export
from rrnn.timing import interleaved


def _program(path: Path, out: Path, window: int, batch: int) -> dict:
    """Lower one checkpoint; its step on a fixed random input, and what it is."""
    lm = StreamingLM(model_from_checkpoint(load_checkpoint(path)).eval())
    start = time.perf_counter()
    step = executorch_export(lm, out, window, batch)
    lowering = time.perf_counter() - start
    vocab = lm.embedding.shape[0]
    tokens = torch.randint(vocab, (window, batch))
    state = [torch.randn_like(s) for s in lm.init_state(batch)]
    with torch.no_grad():
        want = lm(tokens, *state)[0]
    error = (step(tokens, state)[0] - want).abs().max().item()
    return {"step": lambda: step(tokens, state), "bytes": out.stat().st_size,
            "recurrent": type(lm.rnn).__name__, "max_error": error, "lowering_s": lowering}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "checkpoints", nargs="+", help="best.pt or checkpoint.pt files; the first is the reference"
    )
    p.add_argument("--batch", default="1,16", help="comma-separated stream counts (default 1,16)")
    p.add_argument("--window", type=int, default=1, help="tokens per call (default 1: streaming)")
    p.add_argument("--repeats", type=int, default=15, help="timed blocks per program (default 15)")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    warnings.simplefilter("ignore")  # the exporters' notices
    torch.manual_seed(0)
    paths = [Path(c) for c in args.checkpoints]
    labels = [c.parent.name or str(c) for c in paths]
    if len(set(labels)) != len(labels):
        raise SystemExit("checkpoints must lie in differently named run folders (their labels)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (int(b) for b in args.batch.split(",")):
            progs = {lab: _program(c, Path(tmp) / f"{i}.pte", args.window, batch)
                     for i, (lab, c) in enumerate(zip(labels, paths))}  # fmt: skip
            calls = max(1, 400 // (args.window * batch))
            times = interleaved(
                {k: v["step"] for k, v in progs.items()}, args.repeats, warmup=2, block=calls
            )
            med = {k: statistics.median(v) for k, v in times.items()}
            ref = labels[0]
            for lab, prog in progs.items():
                row = {"run": lab, "recurrent": prog["recurrent"], "batch": batch, "window": args.window,
                       "bytes": prog["bytes"], "bytes_ratio": prog["bytes"] / progs[ref]["bytes"],
                       "seconds": med[lab], "latency_ratio": med[lab] / med[ref],
                       "max_error": prog["max_error"], "lowering_s": prog["lowering_s"]}  # fmt: skip
                rows.append(row)
                print(f"B={batch:2d} {lab:48s} {prog['recurrent']:14s} {prog['bytes']:>11,} bytes "
                      f"({row['bytes_ratio']:.3f}x)  {med[lab] * 1e6:8,.0f} us ({row['latency_ratio']:.2f}x)  "
                      f"error {prog['max_error']:.1e}", flush=True)  # fmt: skip
    where = describe_machine(machine())
    print(f"{where}; reference: {labels[0]}")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"machine": where, "reference": labels[0],
                                                       "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
