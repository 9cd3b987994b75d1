"""Forward+backward time of restricted layers against torch.nn of the same size.

    python benchmarks/bench_layers.py                 # the paper's size: B=80, T=35, H=200, L=3
    python benchmarks/bench_layers.py --rates 0 --repeats 50 --json out.json

Prints one line per (cell, sharing rate) with the median time of each and the
speed ratio torch/rrnn (above 1: rrnn is faster), all measured in this run.
"""

import argparse
import json
import sys

import torch

from rrnn.bench import Case, bench_case
from rrnn.fileio import atomic_write_text


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cells", default="rnn,gru,lstm", help="comma-separated cells")
    ap.add_argument("--rates", default="0,0.5,0.9", help="comma-separated sharing rates")
    ap.add_argument("--batch", type=int, default=80, help="batch size")
    ap.add_argument("--steps", type=int, default=35, help="time steps per sequence")
    ap.add_argument("--hidden", type=int, default=200, help="hidden (and input) size")
    ap.add_argument("--layers", type=int, default=3, help="recurrent layers")
    ap.add_argument("--repeats", type=int, default=20, help="timed repeats per implementation")
    ap.add_argument("--forward-only", action="store_true", help="time inference (no_grad) only")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'forward' if args.forward_only else 'forward+backward'}"
    )
    print(f"{'case':<44}{'torch.nn ms':>12}{'rrnn ms':>10}{'speedup':>9}")
    for mode in args.cells.split(","):
        for rate in (float(r) for r in args.rates.split(",")):
            case = Case(mode, rate, args.batch, args.steps, args.hidden, args.layers)
            r = bench_case(case, backward=not args.forward_only, repeats=args.repeats)
            results.append(r)
            print(
                f"{case.label:<44}{r['torch_s'] * 1e3:>12.2f}{r['rrnn_s'] * 1e3:>10.2f}"
                f"{r['speedup']:>8.2f}x",
                flush=True,
            )
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
