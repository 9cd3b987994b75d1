"""One streaming step of a 3 x 200 LSTM at batch 1 (state passed in): torch.nn,
rrnn outside frozen() (weights packed afresh each call) and inside frozen().

    python benchmarks/bench_stream_frozen.py [--rate 0.5] [--threads 1]
"""

import argparse

import torch

import rrnn
from rrnn.timing import interleaved


def best_us(fn, calls=300, repeats=5, warmup=20):
    """The fastest of ``repeats`` blocks of ``calls`` calls, in microseconds per call."""
    times = interleaved({"fn": fn}, repeats, warmup=max(1, warmup // calls), block=calls)
    return min(times["fn"]) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=0.5, help="sharing rate (default 0.5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    m = rrnn.RestrictedLSTM(200, 200, 3, sharing_rate=args.rate).eval()
    ref = m.to_torch().eval()
    x = torch.randn(1, 1, 200)
    h = (torch.zeros(3, 1, 200), torch.zeros(3, 1, 200))
    with torch.no_grad():
        theirs = best_us(lambda: ref(x, h))
        unfrozen = best_us(lambda: m(x, h))
        with m.frozen():
            frozen = best_us(lambda: m(x, h))
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), r = {args.rate}: torch.nn "
        f"{theirs:.0f} us, rrnn unfrozen {unfrozen:.0f} us, rrnn frozen {frozen:.0f} us"
    )


if __name__ == "__main__":
    main()
