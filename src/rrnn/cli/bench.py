"""`rrnn bench`: restricted layers' speed against torch.nn, as ratios in one run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .flags import cell_and_rate_flags, check_device, size_list

MIN_BENCH_REPEATS = 5


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import SIZES, markdown, run_grid
    from ..fileio import atomic_write_text, describe_machine, machine

    check_device(args.device)
    for flag, value in (("--repeats", args.repeats), ("--stream-repeats", args.stream_repeats)):
        if value < MIN_BENCH_REPEATS:  # a median and its interquartile range need several
            raise ValueError(
                f"{flag} {value}: a ratio's median and interquartile range need at least "
                f"{MIN_BENCH_REPEATS} repeats; use {flag} {MIN_BENCH_REPEATS} or more"
            )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.retune:
        from ..kernels import tuning

        path = tuning.cache_path(tuning.machine_key()[0])
        path.unlink(missing_ok=True)
        tuning.forget()
        print(f"forgot the measured dispatch in {path}")
    torch.manual_seed(0)
    print(
        f"{describe_machine(machine())}, {torch.get_num_threads()} threads, device "
        f"{args.device}; ratios > 1: rrnn faster (latency: < 1 is faster)",
        flush=True,
    )
    sizes = args.sizes or list(SIZES)
    records = run_grid(
        args.cells,
        args.rates or (0.0, 0.5, 0.9),
        sizes,
        args.repeats,
        args.stream_repeats,
        args.stream_block,
        log=lambda m: print(m, flush=True),
        device=args.device,
    )
    table = markdown(records)
    print()
    print(table)
    if args.json:
        meta = {
            **machine(),
            "device": args.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "stream_repeats": args.stream_repeats,
            "stream_block": args.stream_block,
        }
        atomic_write_text(
            Path(args.json), json.dumps({"meta": meta, "results": records}, indent=2) + "\n"
        )
    if args.markdown:
        atomic_write_text(Path(args.markdown), table + "\n")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="speed of restricted layers against torch.nn (training, inference, streaming)",
        description="Time restricted layers against torch.nn of the same size in one run: "
        "forward+backward tokens/s, forward tokens/s and per-token latency, as ratios, "
        "medians of interleaved repeats. Sizes: paper (B=80, T=35, H=200, L=3), large "
        "(B=20, T=35, H=650, L=2), stream (B=1, one step, H=200, L=3).",
    )
    cell_and_rate_flags(p, "0,0.5,0.9")
    p.add_argument(
        "--sizes",
        type=size_list,
        default=None,
        help="comma-separated sizes among paper,large,stream (default all)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="timed repeats per implementation and pass (default 10)",
    )
    p.add_argument(
        "--stream-repeats",
        type=int,
        default=30,
        help="timed blocks for the streaming size (default 30)",
    )
    p.add_argument(
        "--stream-block",
        type=int,
        default=20,
        help="consecutive calls per timed block at the streaming size, so that each model "
        "runs with its weights in cache, as in real streaming (default 20)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", default=None, metavar="PATH", help="write every measurement as JSON")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the Markdown table")
    p.add_argument(
        "--retune",
        action="store_true",
        help="forget the kernel paths measured on this machine (its dispatch cache file) "
        "and measure them again as the grid meets each shape",
    )
    p.set_defaults(func=run)
