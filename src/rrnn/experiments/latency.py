"""Inference latency of a trained run's recurrent stack next to the classical
torch.nn stack of the run's full size, timed by ``rrnn bench``'s harness
(interleaved, medians) in one process.

Two shapes, forward only under ``no_grad``: batch 1 streaming (one token per call,
timed in blocks of consecutive calls) and batch 80 sequences of 35 steps, inside the layer's ``frozen()`` where it has one
(restricted layers keep their packed weights, low-rank layers their products). A
pruned model is timed both dense (its masked
matrices) and in CSR form (:class:`~rrnn.baselines.sparse.SparseRNN`); the faster
is its latency, and both are recorded. The result goes to ``latency.json`` in the
run directory, with the machine and thread count; for a report written elsewhere
(``rrnn report --out``), to ``OUT/latency/RUN.json``, leaving the run folders as
they are.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from pathlib import Path

import torch

from ..baselines.sparse import SparseRNN
from ..fileio import atomic_write_text, machine, read_json
from ..lm.train import FINISHED
from ..timing import interleaved
from ..torch_classes import TORCH_LAYERS

LATENCY_FILE = "latency.json"
SHAPES = {"stream": (1, 1), "batch80": (35, 80)}  # (T, B)


def _runner(module, x, hx):
    def run():
        module(x, hx)

    return run


@torch.no_grad()
def measure_run(run_dir, repeats: int = 30, stream_block: int = 20, log=print, dest=None) -> dict:
    """Time ``run_dir``'s best checkpoint; writes the latency record to ``dest``
    (default ``run_dir/latency.json``) and returns it."""
    from ..lm.checkpoint import load_checkpoint, model_from_checkpoint

    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / "best.pt")
    model = model_from_checkpoint(ckpt).eval()
    t = ckpt.train_config
    torch.manual_seed(0)
    reference = TORCH_LAYERS[t["cell"]](t["embedding_size"], t["hidden_size"], t["layers"]).eval()
    stack = model.rnn
    forms = {"model": stack}
    if model.config.compress == "prune":
        forms["sparse"] = SparseRNN(stack)
    frozen = getattr(stack, "frozen", None)
    record = {"run": run_dir.name, "compress": model.config.compress, "shapes": {}}
    for shape, (steps, batch) in SHAPES.items():
        x = torch.randn(steps, batch, t["embedding_size"])  # (T, B, E)
        h = torch.zeros(t["layers"], batch, t["hidden_size"])  # (L, B, H)
        ref_h = (h, h.clone()) if t["cell"] == "lstm" else h
        fns = {"torch.nn": _runner(reference, x, ref_h)}
        for name, module in forms.items():
            fns[name] = _runner(module, x, model.init_hidden(batch))
        block = stream_block if shape == "stream" else 1
        with frozen() if frozen else contextlib.nullcontext():  # inference mode
            times = interleaved(fns, repeats, warmup=3, block=block)
        med = {name: statistics.median(v) for name, v in times.items()}
        best = min((n for n in med if n != "torch.nn"), key=med.get)
        record["shapes"][shape] = {
            "steps": steps,
            "batch": batch,
            "torch_s": med["torch.nn"],
            "dense_s": med["model"],
            "sparse_s": med.get("sparse"),
            "form": "sparse" if best == "sparse" else "dense",
            "latency_s": med[best],
            "ratio_to_torch": med[best] / med["torch.nn"],
        }
        log(
            f"{run_dir.name} {shape}: {med[best] * 1e3:.3f} ms ({best}) vs torch.nn "
            f"{med['torch.nn'] * 1e3:.3f} ms"
            + (
                f"; dense {med['model'] * 1e3:.3f}, CSR {med['sparse'] * 1e3:.3f}"
                if "sparse" in med
                else ""
            )
        )
    record["machine"] = dict(machine(), threads=torch.get_num_threads())
    record["repeats"], record["stream_block"] = repeats, stream_block
    atomic_write_text(Path(dest or run_dir / LATENCY_FILE), json.dumps(record, indent=2) + "\n")
    return record


def measure_sweep(sweep_dir, log=print, dest_dir=None, **kw) -> list[dict]:
    """Every finished run of ``sweep_dir`` that has a best.pt; records into each run
    folder, or into ``dest_dir/latency/RUN.json`` where ``dest_dir`` is given."""
    out = []
    for d in sorted(Path(sweep_dir).iterdir()):
        summary = read_json(d / "summary.json")
        if d.is_dir() and (d / "best.pt").is_file() and isinstance(summary, dict):
            if summary.get("status") in FINISHED:
                dest = None
                if dest_dir is not None:
                    dest = Path(dest_dir) / "latency" / f"{d.name}.json"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                out.append(measure_run(d, log=log, dest=dest, **kw))
    return out
