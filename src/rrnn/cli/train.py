"""`rrnn train`: one language-model run (the paper's setup by default)."""

from __future__ import annotations

import argparse
import os
import sys

from .flags import NOT_CONFIG, check_device, train_flags


def run(args: argparse.Namespace) -> int:
    import shutil

    from ..lm.train import (
        TrainConfig,
        TrainingDiverged,
        check_method_options,
        dry_run_config,
        temp_run_dir,
        train,
    )

    check_device(args.device)
    given = {k: v for k, v in vars(args).items() if k not in NOT_CONFIG and v is not None}
    cfg = TrainConfig(**given)
    if not args.resume:  # a resumed run keeps its own method; its settings are checked then
        check_method_options(cfg, set(given))
    if args.dry_run:
        cfg = dry_run_config(cfg)
    out, temporary = args.out, False
    if out is None:
        if args.resume:
            raise ValueError("--resume needs --out DIR, the run to continue")
        name = cfg.dataset if cfg.corpus is None else "corpus"
        temporary = args.dry_run
        out = (
            temp_run_dir()
            if args.dry_run
            else f"runs/{name}-{cfg.cell}-r{cfg.sharing_rate:g}-{cfg.variant}"
        )
    try:
        result = train(cfg, out, resume=args.resume, overwrite=args.overwrite, explicit=set(given))
    except TrainingDiverged as err:
        print(f"rrnn train: {err}", file=sys.stderr)
        return 3
    finally:
        if temporary:  # a dry run without --out keeps nothing
            shutil.rmtree(out, ignore_errors=True)
    if temporary:
        print(f"dry run finished: test ppl {result['test_ppl']:.2f}; nothing was kept")
        return 0
    if result["status"] == "interrupted":
        return 130
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    stopped = (
        f"; stopped by patience after epoch {result['stopped_epoch']} of {result['epochs_planned']}"
        if result["status"] == "early-stopped"
        else ""
    )
    print(
        f"run {out}: test ppl {result['test_ppl']:.2f} at the best validation epoch "
        f"{result['best_epoch']} (valid ppl {result['valid_ppl']:.2f}); "
        f"{result['rnn_params']:,} recurrent parameters{stopped}"
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a language model (the paper's setup by default)",
        description="Train a word-level language model with a restricted (or classical) "
        "recurrent layer. Defaults are the paper's: 3 layers, E = H = 200, SGD lr 1 with "
        "momentum 0.9 and cosine annealing, clip 0.25, 100 epochs, batch 80, bptt 35.",
    )
    train_flags(p)
    p.set_defaults(func=run)
