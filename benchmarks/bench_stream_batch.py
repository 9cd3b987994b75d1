"""Where streaming pays: one no-grad step of a 3 x 200 stack, the stream path
against the reference path (each pinned on its own module), by batch size, outside
and inside ``frozen()``; one thread, interleaved medians. Prints reference / stream
time (above 1: streaming is faster). kernels.STREAM_MAX_BATCH comes from this.

    python benchmarks/bench_stream_batch.py
"""

import contextlib
import statistics

import torch

import rrnn
from rrnn.fileio import describe_machine, machine
from rrnn.timing import interleaved

torch.set_num_threads(1)
for frozen in (False, True):
    for cls in (rrnn.RestrictedLSTM, rrnn.RestrictedGRU, rrnn.RestrictedRNN):
        for rate in (0.5, 0.9):
            torch.manual_seed(0)
            ms = {k: cls(200, 200, 3, sharing_rate=rate).eval() for k in ("stream", "reference")}
            for k, m in ms.items():
                m.kernel = k
            row = []
            for batch in (1, 4, 8, 16, 32):
                x = torch.randn(1, batch, 200)

                def make(m, x=x):
                    def call():
                        with torch.no_grad():
                            m(x)

                    return call

                with contextlib.ExitStack() as stack:  # frozen() entered once, as a deployed stream
                    if frozen:
                        for m in ms.values():
                            stack.enter_context(m.frozen())
                    t = interleaved({k: make(m) for k, m in ms.items()}, repeats=5, warmup=2, block=20)
                ratio = statistics.median(t["reference"]) / statistics.median(t["stream"])
                row.append(f"B={batch}: {ratio:.2f}x")
            print(f"{'frozen ' if frozen else ''}{cls.__name__} r={rate}: " + ", ".join(row), flush=True)
print(describe_machine(machine()) + ", 1 thread")
