"""What int8 costs a trained language model: perplexity and time, two routes.

For one checkpoint: the streaming export form (``rrnn.lm.export.StreamingLM``: the
recurrent stack in its ``export_form``, the decoder a frozen ``nn.Linear``) in
float32; the same after ``torch.ao.quantization.quantize_dynamic`` (eager int8:
every recurrent block and the decoder); and ``rrnn export --int8`` (ONNX Runtime's
dynamic quantisation) beside ONNX Runtime in float32. Perplexity on the split,
windows of ``--window`` tokens, the state carried; seconds for the whole split.

    python benchmarks/bench_int8.py runs/X/best.pt [--split test] [--window 35] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from rrnn.fileio import atomic_write_text, describe_machine, machine
from rrnn.lm import data as D
from rrnn.lm.export import StreamingLM, _perplexity, export_checkpoint
from rrnn.lm.generate import checkpoint_corpus
from rrnn.lm.train import load_checkpoint, model_from_checkpoint


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint of rrnn train (best.pt)")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="held-out split (default test)")
    p.add_argument("--window", type=int, default=35, help="tokens per step of the graph (default 35)")
    p.add_argument("--batch", type=int, default=80, help="streams (default 80)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, help="write the numbers here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    data = checkpoint_corpus(args.checkpoint, ckpt, None, None, print)
    source = D.batchify(data.split(args.split), args.batch)  # (N, B)
    lm = StreamingLM(model_from_checkpoint(ckpt).eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        int8 = torch.ao.quantization.quantize_dynamic(lm)
    row = {"checkpoint": str(args.checkpoint), "split": args.split, "window": args.window}
    for name, module in (("eager_fp32", lm), ("eager_int8", int8)):
        ppl, seconds = _timed(lambda m=module: _perplexity(lambda x, s: m(x, *s), source, args.window,
                                                           lm.init_state(args.batch)))  # fmt: skip
        row[name] = {"ppl": ppl, "seconds": seconds}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flag in (("onnx_fp32", False), ("onnx_int8", True)):
            r = export_checkpoint(args.checkpoint, Path(tmp) / f"{name}.onnx", window=args.window,
                                  int8=flag, batch=args.batch, split=args.split, log=lambda *a: None)  # fmt: skip
            row[name] = {"ppl": r["onnx_ppl"], "file_bytes": r["file_bytes"], "held_bytes": r["held_bytes"]}
    base = row["eager_fp32"]["ppl"]
    for name in ("eager_int8", "onnx_fp32", "onnx_int8"):
        row[name]["relative"] = (row[name]["ppl"] - base) / base
    row["machine"] = describe_machine(machine())
    for name in ("eager_fp32", "eager_int8", "onnx_fp32", "onnx_int8"):
        r = row[name]
        extra = f"  {r['seconds']:.1f} s" if "seconds" in r else f"  {r['held_bytes']:,} bytes held"
        print(f"{name:10s} ppl {r['ppl']:.4f}  ({r.get('relative', 0.0):+.2e} relative){extra}")
    print(f"{row['machine']}, {args.threads} thread(s)")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
