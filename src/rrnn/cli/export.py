"""`rrnn export`: a checkpoint to ONNX or ExecuTorch, with its parity measured."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from ..lm.export import export_checkpoint

    for name in ("window", "batch_size"):
        value = getattr(args, name)
        if value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    r = export_checkpoint(args.checkpoint, args.out, window=args.window, int8=args.int8,
                          batch=args.batch_size, split=args.split, corpus=args.corpus,
                          data_dir=args.data_dir, format=args.format)  # fmt: skip
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    what = "int8 cost" if r["int8"] else "parity"
    print(
        f"wrote {r['file']}: {r['file_bytes']:,} bytes, {r['held_bytes']:,} held by "
        f"{r['runtime']} ({r['recurrent']}{'; ' + r['weights'] if r.get('weights') else ''}); {r['split']} ppl {r['runtime_ppl']:.4f} in "
        f"{r['runtime']}, {r['torch_ppl']:.4f} in PyTorch ({what}: {r['relative']:.2e} "
        f"relative; batch {r['batch']}, windows of {r['window']})"
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, with its parity measured",
        description="Export a trained language model to ONNX as a streaming generator "
        "(tokens and state in, logits and state out; any batch size), then measure it in "
        "ONNX Runtime: file size, the weight bytes the runtime holds, and the perplexity "
        "on held-out text beside PyTorch's. The recurrent stack goes in its export form "
        "(rrnn.deploy.export_form: a restricted layer's compact blocks, low-rank factors, "
        'a projected LSTM in plain ops). Needs pip install "rrnn[export]".',
    )
    p.add_argument("checkpoint", help="checkpoint.pt or best.pt of a run")
    p.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--format", choices=["onnx", "executorch"], default="onnx",
                   help="onnx (default; any batch size) or executorch (XNNPACK, a .pte for "
                   "--batch-size streams; pip install \"rrnn[executorch]\")")  # fmt: skip
    p.add_argument("--window", type=int, default=1, metavar="T",
                   help="tokens per call the graph is exported for (default 1: streaming)")  # fmt: skip
    p.add_argument("--int8", action="store_true",
                   help="dynamic int8 weights (onnxruntime.quantization); the perplexity cost is printed")  # fmt: skip
    p.add_argument("--split", choices=["valid", "test"], default="test",
                   help="held-out text for the parity check (default test)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=80, help="streams of the parity check (default 80)")
    p.add_argument("--data-dir", default=None, help="folder holding the built-in dataset")
    p.add_argument("--corpus", default=None, metavar="DIR", help="a moved copy of the run's corpus")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
