"""`rrnn generate`: text sampled from a checkpoint or an exported ONNX file."""

from __future__ import annotations

import argparse

from .flags import check_device


def run(args: argparse.Namespace) -> int:
    from ..lm.generate import generate

    check_device(args.device)
    print(
        generate(args.checkpoint, args.words, args.temperature, args.seed, args.prompt, args.device)
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="sample text from a checkpoint",
        description="Sample words from a trained language model: a checkpoint, or an ONNX file "
        "written by `rrnn export` (run in ONNX Runtime).",
    )
    p.add_argument("checkpoint", help="checkpoint.pt or best.pt of a run, or a FILE.onnx from rrnn export")
    p.add_argument("--words", type=int, default=100, help="number of words to sample (default 100)")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="softmax temperature; lower is more conservative (default 1.0)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    p.add_argument(
        "--prompt", default=None, help="text to continue (default: the start of a sentence)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(func=run)
