"""`rrnn eval`: a checkpoint's perplexity on a split."""

from __future__ import annotations

import argparse
import json

from .flags import check_device


def run(args: argparse.Namespace) -> int:
    from ..lm.generate import evaluate_checkpoint

    check_device(args.device)
    r = evaluate_checkpoint(
        args.checkpoint,
        args.split,
        args.batch_size,
        args.data_dir,
        args.bptt,
        args.device,
        corpus=args.corpus,
    )
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(
            f"{r['split']} ppl {r['ppl']:.2f} ({r['tokens']:,} tokens, batch size "
            f"{r['batch_size']}, bptt {r['bptt']}, checkpoint after epoch {r['epoch']})"
        )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity of a checkpoint on a split",
        description="Evaluate a checkpoint on a whole split of the corpus it was trained on.",
    )
    p.add_argument("checkpoint", help="checkpoint.pt or best.pt of a run")
    p.add_argument(
        "--split",
        choices=["train", "valid", "test"],
        default="test",
        help="split to evaluate (default test)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="evaluation batch size (default: the run's); 1 gives the exact streaming perplexity",
    )
    p.add_argument(
        "--bptt",
        type=int,
        default=None,
        help="window length (default: the run's); does not change the result, only memory and speed",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the built-in dataset (default: the run's, $RRNN_DATA_DIR, ~/.cache/rrnn)",
    )
    p.add_argument(
        "--corpus",
        default=None,
        metavar="DIR",
        help="a moved copy of the run's own corpus folder (default: where it was trained); "
        "checked against the files' hashes",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
