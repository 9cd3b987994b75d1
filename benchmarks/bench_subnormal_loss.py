"""The decoder + loss with subnormal numbers in h: rrnn's fused loss against torch's pair.

    python benchmarks/bench_subnormal_loss.py                   # PTB's step: 2,800 x 200 -> 10,000
    python benchmarks/bench_subnormal_loss.py --fraction 0.01 --threads 1

An LSTM unit whose output gate is shut (gate input below -87) emits h of about
1e-40, below float32's smallest normal number. A PTB checkpoint of the tied
restricted LSTM (r = 0.5, after one epoch at lr 10) had 0.13% of its last layer's
outputs there (the default --fraction). One forward + backward of the decoder and
the cross-entropy is timed four ways, alternately in one run: torch's
F.cross_entropy(F.linear(h, W, b)) and rrnn's linear_cross_entropy, each on a clean
h and on the same h with that fraction of its entries made subnormal. Printed:
milliseconds per call (median, interquartile range) and each slowdown.
"""

import argparse
import statistics

import torch
import torch.nn.functional as F

from rrnn.fileio import describe_machine, machine
from rrnn.lm.loss import linear_cross_entropy
from rrnn.timing import interleaved


def _inputs(args):
    g = torch.Generator().manual_seed(0)
    h = torch.tanh(torch.randn(args.rows, args.size, generator=g))  # (N, H)
    w = (torch.randn(args.vocab, args.size, generator=g) * 0.3).requires_grad_()  # (V, H)
    b = torch.zeros(args.vocab).requires_grad_()
    y = torch.randint(args.vocab, (args.rows,), generator=g)
    sub = h.clone()
    picked = torch.rand(h.shape, generator=g) < args.fraction
    sub[picked] = 1e-40 * torch.sign(h[picked])  # subnormal in float32
    return h.requires_grad_(), sub.requires_grad_(), w, b, y


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=2800, help="rows of h (batch x bptt; PTB: 80 x 35)")
    ap.add_argument("--size", type=int, default=200, help="hidden size")
    ap.add_argument("--vocab", type=int, default=10_000, help="vocabulary size (PTB: 10,000)")
    ap.add_argument("--fraction", type=float, default=0.0013, help="share of h made subnormal")
    ap.add_argument("--repeats", type=int, default=15, help="timed calls of each")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, sub, w, b, y = _inputs(args)
    params = (w, b)

    def call(loss_fn, x):
        return lambda: torch.autograd.grad(loss_fn(x), (x,) + params)

    torch_pair = lambda x: F.cross_entropy(F.linear(x, w, b), y)  # noqa: E731
    fused = lambda x: linear_cross_entropy(x, w, b, y)  # noqa: E731
    fns = {
        "torch, clean h": call(torch_pair, h),
        "torch, subnormal h": call(torch_pair, sub),
        "rrnn fused, clean h": call(fused, h),
        "rrnn fused, subnormal h": call(fused, sub),
    }
    times = interleaved(fns, args.repeats, warmup=2)
    print(f"{describe_machine(machine())}, {torch.get_num_threads()} threads; "
          f"h ({args.rows}, {args.size}), V = {args.vocab:,}, "
          f"{int((sub != h).sum()):,} subnormal entries ({args.fraction:.2%})")  # fmt: skip
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for name, v in times.items():
        q = statistics.quantiles([t * 1e3 for t in v], n=4)
        print(f"  {name:<26}{med[name]:8.1f} ms   (IQR {q[0]:.1f} to {q[2]:.1f})")
    for who in ("torch", "rrnn fused"):
        slow = med[f"{who}, subnormal h"] / med[f"{who}, clean h"]
        print(f"  {who}: subnormal h takes {slow:.2f}x the time of clean h")


if __name__ == "__main__":
    main()
