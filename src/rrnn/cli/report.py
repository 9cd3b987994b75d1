"""`rrnn report`: tables, figures and the paper's claims from a sweep folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..experiments.report import write_report

    if args.latency:
        import torch

        from ..experiments.latency import measure_sweep

        if args.threads:
            torch.set_num_threads(args.threads)
        elsewhere = args.out is not None and Path(args.out).resolve() != Path(args.sweep_dir).resolve()
        measure_sweep(args.sweep_dir, dest_dir=args.out if elsewhere else None)
    result = write_report(args.sweep_dir, args.out, args.rule, machine=args.machine)
    print(
        f"wrote {result['report']}, {result['csv']}" + "".join(f", {p}" for p in result["figures"])
    )
    for c in result["claims"]:
        print(f"claim {c['claim']}: {c['verdict']}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="tables, figures and the paper's claims from a sweep folder",
        description="Read every run under SWEEP_DIR and write report.md (tables in the "
        "paper's shape with its numbers beside ours, the paper's claims judged on the "
        "runs), report.csv and PNG figures (perplexity against recurrent parameters, "
        "learning curves).",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the --out folder of rrnn sweep")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write (default SWEEP_DIR)")
    p.add_argument(
        "--rule",
        choices=["best-valid", "min-test"],
        default="best-valid",
        help="best-valid (default): test perplexity at the best validation epoch; min-test: "
        "the authors' convention, the minimum test perplexity over all epochs (optimistic)",
    )
    p.add_argument(
        "--machine",
        default=None,
        metavar="TEXT",
        help="what the runs ran on, for runs whose summaries do not record it",
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="first time every finished run's best.pt (batch 1 streaming and batch 80 "
        "sequences, beside the full-size torch.nn stack) into its latency.json, or, where "
        "it has no best.pt (committed runs), its final architecture with fresh weights; the "
        "compression section and pareto-latency.png use it. Run it on an idle machine",
    )
    p.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="torch threads for --latency (default torch's)",
    )  # fmt: skip
    p.set_defaults(func=run)
