"""The export forms in ExecuTorch (XNNPACK) against torch.nn's LSTM lowered the same way.

For a 3 x 200 LSTM stack (benchmarks/stacks.py; ``--method`` as in bench_deploy.py:
``restrict`` at each of ``--rates``, ``lowrank`` at rank 90, ``projection`` 82), each
form and its torch.nn reference exported with ``torch.export`` for one shape (T, B)
with the state as inputs, lowered with the XNNPACK partitioner and run by the
ExecuTorch runtime (its own thread pool; interleaved, medians); the program's size
in bytes (the weights it carries), and the error on a second input against the
form's eager output.

    pip install executorch        # not an rrnn dependency: this benchmark only
    python benchmarks/bench_executorch.py [--method restrict] [--rates 0.5,0.9] \
        [--shapes 1x1,1x16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

import stacks  # benchmarks/stacks.py
from rrnn.fileio import atomic_write_text, describe_machine, machine
from rrnn.timing import interleaved


def lower(module, example):
    """(program bytes, loaded program, seconds to lower). The runtime reads the
    bytes in place: keep them and the program alive while the method runs."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    start = time.perf_counter()
    program = torch.export.export(module, example)
    buffer = (
        to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        .to_executorch()
        .buffer
    )
    seconds = time.perf_counter() - start
    return buffer, Runtime.get().load_program(buffer), seconds


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    stacks.add_arguments(p, "lower")
    p.add_argument(
        "--shapes", default="1x1,1x16", help="TxB shapes (default 1x1,1x16; 35x80 lowers slowly)"
    )
    p.add_argument("--repeats", type=int, default=15, help="timed blocks per form (default 15)")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    warnings.simplefilter("ignore")  # the exporters' notices
    torch.manual_seed(0)
    rows = []
    for label, stack in stacks.forms(args.method, args.rates):
        for shape in args.shapes.split(","):
            T, B = (int(v) for v in shape.split("x"))
            size, runs, error, lowering, alive = {}, {}, {}, {}, []
            for name, (module, width) in stack.items():
                example = (
                    torch.randn(T, B, 200),
                    (torch.randn(3, B, width), torch.randn(3, B, 200)),
                )
                second = [torch.randn(T, B, 200), torch.randn(3, B, width), torch.randn(3, B, 200)]
                with torch.no_grad():
                    want = module(second[0], (second[1], second[2]))[0]
                buffer, program, lowering[name] = lower(module, example)
                method = program.load_method("forward")
                alive += [buffer, program, method]
                size[name] = len(buffer)
                error[name] = (method.execute(second)[0] - want).abs().max().item()
                runs[name] = lambda m=method, inputs=second: m.execute(inputs)
            times = interleaved(runs, args.repeats, warmup=2, block=max(1, 2000 // (T * B)))
            med = {k: statistics.median(v) for k, v in times.items()}
            for name in stack:
                if name == "torch":
                    continue
                row = {"method": args.method, "stack": label, "form": name, "T": T, "B": B,
                       "bytes": size[name], "bytes_torch": size["torch"],
                       "bytes_ratio": size[name] / size["torch"], "form_s": med[name],
                       "torch_s": med["torch"], "latency_ratio": med[name] / med["torch"],
                       "max_error": error[name], "max_error_torch": error["torch"],
                       "lowering_s": {name: lowering[name], "torch": lowering["torch"]}}  # fmt: skip
                rows.append(row)
                print(f"{label} {name:10s} T={T:2d} B={B:2d}  program {row['bytes_ratio']:.3f}x "
                      f"({size[name]:,} / {size['torch']:,} bytes)  latency "
                      f"{row['latency_ratio']:.2f}x ({med[name] * 1e6:,.0f} / "
                      f"{med['torch'] * 1e6:,.0f} us)  error {error[name]:.1e}  lowered in "
                      f"{lowering[name]:.0f} / {lowering['torch']:.0f} s", flush=True)  # fmt: skip
    where = describe_machine(machine())
    print(where)
    if args.json:
        atomic_write_text(
            Path(args.json), json.dumps({"machine": where, "rows": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
