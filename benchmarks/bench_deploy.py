"""The export form in ONNX Runtime against torch.nn's LSTM exported the same way.

For a 3 x 200 LSTM stack at each sharing rate: both exported with
``torch.onnx.export(dynamo=True)`` for one shape (T, B) with the state as inputs,
then timed in ONNX Runtime (one intra-op thread unless --threads), interleaved,
medians; and the weight bytes each session holds after ORT's optimiser ran.

    python benchmarks/bench_deploy.py [--rates 0.5,0.9] [--threads 1] [--json FILE]

Prints one row per (rate, shape): held bytes ratio and latency ratio (compact /
torch.nn: below 1 is smaller or faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import warnings
from pathlib import Path

import torch

import rrnn
from rrnn.bench import interleaved
from rrnn.deploy import compact
from rrnn.fileio import atomic_write_text, describe_machine, machine
from rrnn.lm.export import held_bytes

SHAPES = [(1, 1), (1, 16), (35, 80)]  # (T, B): streaming, a batch of streams, a window


def _session(module, example, path: Path, threads: int):
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, path, dynamo=True, verbose=False, external_data=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(names, [example[0].numpy(), *(t.numpy() for t in example[1])]))
    return session, feeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="0.5,0.9", help="sharing rates (default 0.5,0.9)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--repeats", type=int, default=15, help="timed blocks per form (default 15)")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate in (float(r) for r in args.rates.split(",")):
            layer = rrnn.RestrictedLSTM(200, 200, 3, sharing_rate=rate).eval()
            forms = {"compact": compact(layer), "torch": layer.to_torch().eval()}
            for T, B in SHAPES:
                example = (torch.randn(T, B, 200), (torch.randn(3, B, 200), torch.randn(3, B, 200)))
                held, runs = {}, {}
                for name, module in forms.items():
                    path = Path(tmp) / f"{name}-{rate}-{T}x{B}.onnx"
                    session, feeds = _session(module, example, path, args.threads)
                    held[name] = held_bytes(path)
                    runs[name] = lambda s=session, f=feeds: s.run(None, f)
                times = interleaved(runs, args.repeats, warmup=1, block=max(1, 2000 // (T * B)))
                med = {k: statistics.median(v) for k, v in times.items()}
                row = {"rate": rate, "T": T, "B": B, "held_compact": held["compact"],
                       "held_torch": held["torch"], "held_ratio": held["compact"] / held["torch"],
                       "compact_s": med["compact"], "torch_s": med["torch"],
                       "latency_ratio": med["compact"] / med["torch"]}  # fmt: skip
                rows.append(row)
                print(f"r={rate:g} T={T:2d} B={B:2d}  held {row['held_ratio']:.3f}x "
                      f"({held['compact']:,} / {held['torch']:,} bytes)  latency "
                      f"{row['latency_ratio']:.2f}x ({med['compact'] * 1e6:,.0f} / "
                      f"{med['torch'] * 1e6:,.0f} us)", flush=True)  # fmt: skip
    where = describe_machine(machine())
    print(f"{where}; onnxruntime, {args.threads} intra-op thread(s)")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"machine": where, "threads": args.threads,
                                                       "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
