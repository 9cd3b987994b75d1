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

What is timed: the run's ``best.pt`` where it has one; otherwise (committed runs
carry no checkpoints) the run's final architecture, read from its ``summary.json``,
with fresh weights: a forward pass's time depends on the shapes, not on the values,
except for a pruned model's CSR form, which gets a random mask keeping the run's
recorded nonzero count. The record's ``weights`` says which.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from pathlib import Path

import torch

from ..baselines.sparse import SparseRNN
from ..fileio import atomic_write_text, machine, read_json
from ..lm.config import ModelConfig
from ..lm.model import RNNModel
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
def _masked(stack, nonzero: int, generator) -> None:
    """Zero random entries of every weight matrix of ``stack`` (the same fraction of
    each; biases are never pruned) so that ``nonzero`` parameters stay nonzero."""
    weights = [p for p in stack.parameters() if p.dim() > 1]
    biases = sum(p.numel() for p in stack.parameters() if p.dim() == 1)
    keep = (nonzero - biases) / sum(w.numel() for w in weights)
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"a nonzero count of {nonzero:,} does not fit this model's weights")
    for w in weights:
        order = torch.randperm(w.numel(), generator=generator)
        w.view(-1)[order[round(keep * w.numel()) :]] = 0.0


def run_model(run_dir) -> tuple[RNNModel, dict, str]:
    """``(model, train config, weights)`` to time for ``run_dir``: its best.pt
    (``weights`` "best.pt"), else its final architecture with fresh weights
    ("architecture"; see the module's docstring)."""
    from ..lm.checkpoint import load_checkpoint, model_from_checkpoint

    run_dir = Path(run_dir)
    if (run_dir / "best.pt").is_file():
        ckpt = load_checkpoint(run_dir / "best.pt")
        return model_from_checkpoint(ckpt).eval(), ckpt.train_config, "best.pt"
    summary, config = read_json(run_dir / "summary.json"), read_json(run_dir / "config.json")
    if not isinstance(summary, dict) or not isinstance(summary.get("model"), dict):
        raise FileNotFoundError(
            f"{run_dir} has neither best.pt nor a summary.json with its model; "
            "time a run that has trained at least one epoch"
        )
    if not isinstance(config, dict) or "train" not in config:
        raise FileNotFoundError(f"{run_dir} has no readable config.json (written by rrnn train)")
    spec = dict(summary["model"])
    if spec.get("compress") == "iss" and summary.get("widths"):
        spec["widths"] = summary["widths"]  # the model after the cut
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = RNNModel(ModelConfig.from_dict(spec)).eval()
    if spec.get("compress") == "prune":
        _masked(model.rnn, int(summary["rnn_params_nonzero"]), generator)
    return model, config["train"], "architecture"


@torch.no_grad()
def measure_run(run_dir, repeats: int = 30, stream_block: int = 20, log=print, dest=None) -> dict:
    """Time ``run_dir``'s model (:func:`run_model`); writes the latency record to
    ``dest`` (default ``run_dir/latency.json``) and returns it."""
    run_dir = Path(run_dir)
    model, t, weights = run_model(run_dir)
    torch.manual_seed(0)
    reference = TORCH_LAYERS[t["cell"]](t["embedding_size"], t["hidden_size"], t["layers"]).eval()
    stack = model.rnn
    forms = {"model": stack}
    if model.config.compress == "prune":
        forms["sparse"] = SparseRNN(stack)
    frozen = getattr(stack, "frozen", None)
    record = {"run": run_dir.name, "compress": model.config.compress, "weights": weights,
              "shapes": {}}  # fmt: skip
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
    """Every finished run of ``sweep_dir`` (from its best.pt, or its architecture
    where it has none); records into each run folder, or into
    ``dest_dir/latency/RUN.json`` where ``dest_dir`` is given."""
    out = []
    for d in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
        summary = read_json(d / "summary.json")
        if not isinstance(summary, dict) or summary.get("status") not in FINISHED:
            continue
        if not (d / "best.pt").is_file() and not isinstance(summary.get("model"), dict):
            log(f"{d.name}: no best.pt and no model in summary.json (an old run); not timed")
            continue
        dest = None
        if dest_dir is not None:
            dest = Path(dest_dir) / "latency" / f"{d.name}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
        out.append(measure_run(d, log=log, dest=dest, **kw))
    return out
