"""`rrnn sweep`: a grid of runs on local processes or Ray."""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import NOT_CONFIG, train_flags


def run(args: argparse.Namespace) -> int:
    from ..experiments.sweep import (
        AXES,
        Sweep,
        check_data,
        expand,
        parse_grid,
        parse_list,
        record_grid,
    )
    from ..lm.train import FINISHED

    axes = {a: parse_list(a, getattr(args, a)) for a in AXES if getattr(args, a) is not None}
    grids = [parse_grid(text) for text in args.grid or []]
    skip = NOT_CONFIG | set(AXES) | {"grid", "jobs", "launcher", "ray_address", "list"}
    base = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    for key in ("corpus", "data_dir"):  # runs are found from anywhere, and by Ray workers
        if base.get(key):
            base[key] = str(Path(base[key]).expanduser().resolve())
    threads = base.pop("threads", None)
    runs = expand(base, axes, grids)
    out = Path(args.out)
    sweep = Sweep(out, runs, jobs=args.jobs, threads=threads, log=lambda m: print(m, flush=True))
    print(sweep.plan(), flush=True)
    if args.list:
        return 0
    check_data([r for r in runs if r.state in ("new", "resume")])  # before any folder or run
    out.mkdir(parents=True, exist_ok=True)
    request = {"axes": axes, "grids": grids, "common": base}
    record_grid(out, request, runs)
    if args.launcher == "ray":
        results = sweep.run_ray(args.ray_address)
    else:
        results = sweep.run_local()
    bad = {n: r for n, r in results.items() if r not in FINISHED}
    conflicts = [r for r in runs if r.state == "conflict"]
    for run in conflicts:
        print(f"conflict {run.name}: {run.detail}; use another --out for these settings")
    if any(r == "interrupted" for r in bad.values()):
        return 130
    return 1 if bad or conflicts else 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="a grid of training runs, skipped/resumed/started, on local processes or Ray",
        description="Train every configuration of a grid, one run directory each under "
        "--out. Invoked again with the same --out, finished runs are skipped, stopped ones "
        "resumed from their checkpoint and missing ones started; a different grid adds runs. "
        "Axes take comma-separated lists (--cells lstm,gru --sharing-rates 0,0.5,1); every "
        "other flag of `rrnn train` applies to all runs (a method option, such as "
        "--prune-schedule or --iss-lambda, to the runs whose method reads it). Ctrl-C "
        "checkpoints the running "
        "runs and stops.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (required)")
    p.add_argument(
        "--grid",
        action="append",
        metavar="SPEC",
        help='a product of axes, e.g. "cells=gru sharing-rates=0,0.5 lrs=10"; repeatable: '
        "the sweep is the union of the --grid products, and the axis flags (--cells, ...) "
        "then only fill the axes a --grid does not name (they add no product of their own)",
    )
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="runs trained at once (default 1)"
    )
    p.add_argument(
        "--launcher",
        choices=["local", "ray"],
        default="local",
        help="local: --jobs processes on this machine (default); ray: each run a Ray task "
        '(needs pip install "rrnn[ray]")',
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join (default: start a local Ray instance; 'auto' joins a "
        "running one)",
    )
    p.add_argument(
        "--list", action="store_true", help="print the runs and their state; train nothing"
    )
    train_flags(p, sweep=True)
    p.set_defaults(func=run)
