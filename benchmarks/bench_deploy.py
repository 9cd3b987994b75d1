"""Export forms in ONNX Runtime against torch.nn's LSTM exported the same way.

For a 3 x 200 LSTM stack, each form exported with ``torch.onnx.export(dynamo=True)``
for one shape (T, B) with the state as inputs, then timed in ONNX Runtime (one
intra-op thread unless --threads), interleaved, medians; and the weight bytes each
session holds after ORT's optimiser ran. ``--method``:

- ``restrict`` (each of ``--rates``): ``compact(layer)`` against ``layer.to_torch()``;
- ``lowrank``: the factors at the budget of r = 0.5 (rank 90), as
  :class:`~rrnn.deploy.FactoredRNN` and as trained (``A @ B`` in the graph);
- ``projection``: ``torch.nn.LSTM(proj_size=82)`` (the same budget) as
  :class:`~rrnn.deploy.ProjectedLSTM` (torch's own export of it does not load).

    python benchmarks/bench_deploy.py [--method restrict] [--rates 0.5,0.9] [--json FILE]

Prints one row per (form, shape): held bytes ratio and latency ratio (form /
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

import stacks  # benchmarks/stacks.py
from rrnn.fileio import atomic_write_text, describe_machine, machine
from rrnn.lm.export import held_bytes
from rrnn.timing import interleaved

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
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    stacks.add_arguments(p, "export")
    p.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)"
    )
    p.add_argument("--repeats", type=int, default=15, help="timed blocks per form (default 15)")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, stack in stacks.forms(args.method, args.rates):
            for T, B in SHAPES:
                x, c = torch.randn(T, B, 200), torch.randn(3, B, 200)
                held, runs = {}, {}
                for name, (module, width) in stack.items():
                    example = (x, (torch.randn(3, B, width), c))
                    path = Path(tmp) / f"{name}-{T}x{B}.onnx"
                    session, feeds = _session(module, example, path, args.threads)
                    held[name] = held_bytes(path)
                    runs[name] = lambda s=session, f=feeds: s.run(None, f)
                times = interleaved(runs, args.repeats, warmup=1, block=max(1, 2000 // (T * B)))
                med = {k: statistics.median(v) for k, v in times.items()}
                for name in stack:
                    if name == "torch":
                        continue
                    row = {"method": args.method, "stack": label, "form": name, "T": T, "B": B,
                           "held": held[name], "held_torch": held["torch"],
                           "held_ratio": held[name] / held["torch"], "form_s": med[name],
                           "torch_s": med["torch"], "latency_ratio": med[name] / med["torch"]}  # fmt: skip
                    rows.append(row)
                    print(f"{label} {name:10s} T={T:2d} B={B:2d}  held {row['held_ratio']:.3f}x "
                          f"({held[name]:,} / {held['torch']:,} bytes)  latency "
                          f"{row['latency_ratio']:.2f}x ({med[name] * 1e6:,.0f} / "
                          f"{med['torch'] * 1e6:,.0f} us)", flush=True)  # fmt: skip
    where = describe_machine(machine())
    print(f"{where}; onnxruntime, {args.threads} intra-op thread(s)")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"machine": where, "threads": args.threads,
                                                       "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
