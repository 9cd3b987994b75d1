"""End-to-end language-model training throughput: rrnn against torch.nn.

    python benchmarks/bench_lm.py                      # LSTM, r = 0 and 0.5, the paper's size
    python benchmarks/bench_lm.py --cell gru --rates 0 --repeats 30

One training step = embedding, 3-layer recurrent stack, decoder over a
10,000-word vocabulary, cross-entropy, backward, clipping, SGD. The model with
a restricted layer and rrnn's fused decoder + loss (--loss) and the same model
with a plain torch.nn layer and F.cross_entropy are timed alternately in one
run; the ratio is rrnn tokens/s over torch.nn tokens/s, with the interquartile
range of the per-step ratios, and the time of each part of each model.
"""

import argparse
import json
import sys

import torch

from rrnn.bench import bench_lm
from rrnn.fileio import atomic_write_text, describe_machine, machine


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cell", default="lstm", choices=["rnn", "gru", "lstm"], help="recurrent cell")
    ap.add_argument("--rates", default="0,0.5", help="comma-separated sharing rates")
    ap.add_argument("--vocab", type=int, default=10_000, help="vocabulary size (PTB: 10,000)")
    ap.add_argument("--batch", type=int, default=80, help="batch size")
    ap.add_argument("--bptt", type=int, default=35, help="window length")
    ap.add_argument("--size", type=int, default=200, help="embedding and hidden size")
    ap.add_argument("--layers", type=int, default=3, help="recurrent layers")
    ap.add_argument("--repeats", type=int, default=20, help="timed steps per model")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument(
        "--loss",
        default="fused",
        choices=["fused", "torch"],
        help="the rrnn model's decoder + loss: fused (chunked) or torch (F.cross_entropy); "
        "the torch.nn model always uses F.cross_entropy",
    )
    ap.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"],
        help="the rrnn model's fused decoder GEMMs: fp32, or bf16 operands (the torch.nn "
        "model stays float32; the issue's targets are float32)",
    )  # fmt: skip
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{describe_machine(machine())}, {torch.get_num_threads()} threads, rrnn loss "
        f"{args.loss}, precision {args.precision}"
    )
    print(
        f"{'model':<34}{'torch.nn tok/s':>15}{'rrnn tok/s':>12}{'ratio':>8}{'IQR':>12}"
        f"{'  per part (ms): recurrent f+b, decoder+loss f+b; torch.nn | rrnn'}"
    )
    results = []
    for rate in (float(r) for r in args.rates.split(",")):
        r = bench_lm(
            args.cell, rate, args.vocab, args.batch, args.bptt, args.size, args.layers,
            args.repeats, loss=args.loss, precision=args.precision,
        )  # fmt: skip
        r["machine"] = machine()
        results.append(r)
        label = f"{args.cell} r={rate:g} {args.layers}x{args.size} V={args.vocab}"
        print(
            f"{label:<34}{r['torch_tokens_per_s']:>15,.0f}{r['rrnn_tokens_per_s']:>12,.0f}"
            f"{r['ratio']:>7.2f}x{r['ratio_iqr'][0]:>6.2f}-{r['ratio_iqr'][1]:.2f}  "
            + " | ".join(
                f"{p['recurrent']:.0f}, {p['decoder_and_loss']:.0f}" for p in r["parts_ms"].values()
            ),
            flush=True,
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
