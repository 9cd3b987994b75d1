"""``rrnn export``: a trained language model as an ONNX streaming generator (or an
ExecuTorch program, ``--format executorch``), and its parity with PyTorch measured
on held-out text.

The exported graph takes ``tokens`` (T, B) int64 and the recurrent state and
returns ``logits`` (T, B, V) and the new state: feeding its state back, one token
(T = 1) at a time, it generates text. The batch size is a dynamic dimension; T
is the window it was exported for. The recurrent stack goes in its export form
(:func:`rrnn.deploy.export_form`): a restricted one as its compact blocks; a
low-rank one as its factors, two thin products per matrix (never the full
product); the projected LSTM in plain ops; the dense, pruned and torch-backend
models as torch.nn layers (pruned: its masked dense matrices); ISS-compacted
stacks as they are.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as D
from .checkpoint import load_checkpoint, model_from_checkpoint
from .generate import checkpoint_corpus


class StreamingLM(nn.Module):
    """``(tokens (T, B), *state) -> (logits (T, B, V), *new state)``; the state is
    flat tensors: ``h (L, B, H)`` and, for the LSTM, ``c (L, B, H)``; for an ISS
    stack one ``h`` (and ``c``) per layer, ``(1, B, width_l)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from ..deploy import export_form, frozen_linear

        cfg = model.config
        self.lstm, self.per_layer = cfg.cell == "lstm", cfg.widths is not None
        self.register_buffer("embedding", model.encoder.weight.detach().clone())  # (V, E)
        self.tied = cfg.tie_weights  # the decoder reads the embedding: one matrix, held once
        if self.tied:
            self.register_buffer("decoder_bias", model.decoder.bias.detach().clone())  # (V,)
        else:  # a frozen nn.Linear (V, H), which quantize_dynamic swaps for int8
            self.decoder = frozen_linear(model.decoder.weight.detach(), model.decoder.bias.detach())
        self.rnn = export_form(model.rnn).eval()

    def init_state(self, batch: int) -> list[Tensor]:
        """The zero state as the graph's inputs."""
        if self.per_layer:
            states = self.rnn.init_state(batch, self.embedding)
            return [t for s in states for t in (s if self.lstm else (s,))]
        layers, hidden = self.rnn.num_layers, self.rnn.hidden_size
        h = torch.zeros(layers, batch, getattr(self.rnn, "state_size", hidden))  # projected: P wide
        return [h, torch.zeros(layers, batch, hidden)] if self.lstm else [h]

    @torch.no_grad()
    def forward(self, tokens: Tensor, *state: Tensor):
        emb = F.embedding(tokens, self.embedding)  # (T, B, E)
        if self.per_layer:
            hx = [tuple(state[2 * i : 2 * i + 2]) for i in range(len(state) // 2)] if self.lstm \
                else list(state)  # fmt: skip
        else:
            hx = tuple(state) if self.lstm else state[0]
        out, new = self.rnn(emb, hx)  # (T, B, H)
        if self.tied:
            logits = F.linear(out, self.embedding, self.decoder_bias)  # (T, B, V)
        else:
            logits = self.decoder(out)  # (T, B, V)
        if self.per_layer:
            flat = [t for s in new for t in (s if self.lstm else (s,))]
        else:
            flat = list(new) if self.lstm else [new]
        return (logits, *flat)


def onnx_export(lm: StreamingLM, path: Path, window: int) -> None:
    """Export ``lm`` for windows of ``window`` tokens and any batch size."""
    try:
        import onnxscript  # noqa: F401  the exporter needs it
    except ImportError:
        raise ValueError('rrnn export needs the export extra: pip install "rrnn[export]"') from None
    batch = torch.export.Dim("batch", min=1)
    state = lm.init_state(2)
    tokens = torch.zeros(window, 2, dtype=torch.long)
    shapes = ({1: batch}, tuple({1: batch} for _ in state))  # *state: batch second
    names = ["tokens"] + [f"state_in_{i}" for i in range(len(state))]
    outs = ["logits"] + [f"state_out_{i}" for i in range(len(state))]
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed", once per operator
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(lm, (tokens, *state), path, dynamo=True, dynamic_shapes=shapes,
                              input_names=names, output_names=outs, external_data=False,
                              verbose=False)  # fmt: skip
    finally:
        quiet.setLevel(level)


def weights_note(model: nn.Module) -> str | None:
    """What the file holds of a pruned model's sparsity: its masked dense matrices,
    zeros included, which the runtime multiplies as dense ones (rrnn exports no
    sparse form; docs/deployment.md). None for other models."""
    if getattr(model.config, "compress", None) != "prune":
        return None
    return "pruned: masked dense matrices, zeros stored and multiplied (no sparse form exported)"


def executorch_export(lm: StreamingLM, path: Path, window: int, batch: int):
    """Export ``lm`` for windows of ``window`` tokens and ``batch`` streams (static:
    XNNPACK lowers fixed shapes), lowered with the XNNPACK partitioner, to ``path``
    (.pte); returns ``step(tokens, state) -> [logits, *state]`` on the loaded program."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
    except ImportError:
        raise ValueError('rrnn export --format executorch needs ExecuTorch: pip install '
                         '"rrnn[executorch]"') from None  # fmt: skip
    from ..fileio import atomic_write_bytes

    example = (torch.zeros(window, batch, dtype=torch.long), *lm.init_state(batch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(lm, example)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        buffer = edge.to_executorch().buffer
    atomic_write_bytes(path, buffer)
    loaded = Runtime.get().load_program(buffer)  # reads `buffer` in place: kept with it
    method = loaded.load_method("forward")

    def step(x, state, _keep=(buffer, loaded)):
        return list(method.execute([x, *state]))

    return step


def held_bytes(path: Path) -> int:
    """Bytes of constants ONNX Runtime holds once its optimiser has run."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the warning that the optimised copy is machine-specific
    options.optimized_model_filepath = str(path) + ".optimized"
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    try:
        graph = onnx.load(options.optimized_model_filepath).graph
        return sum(onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer)
    finally:
        Path(options.optimized_model_filepath).unlink(missing_ok=True)


def _perplexity(step, source: Tensor, window: int, state: list) -> float:
    """Mean cross-entropy over full windows of ``source`` (N, B), state carried."""
    total, count = 0.0, 0
    for i in range(0, source.size(0) - 1 - window + 1, window):
        x, y = source[i : i + window], source[i + 1 : i + 1 + window]  # (T, B)
        logits, *state = step(x, state)
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                 reduction="sum").item()  # fmt: skip
        count += y.numel()
    return math.exp(total / count)


def export_checkpoint(path, out, window: int = 1, int8: bool = False, batch: int = 80,
                      split: str = "test", corpus=None, data_dir=None, log=print,
                      format: str = "onnx") -> dict:  # fmt: skip
    """Export a checkpoint to ONNX (or an ExecuTorch program); returns sizes and the
    measured parity."""
    if format == "executorch":
        if int8:
            raise ValueError("--int8 quantises through ONNX Runtime: use it with --format onnx")
        return _executorch_checkpoint(path, Path(out), window, batch, split, corpus, data_dir, log)
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError('rrnn export needs the export extra: pip install "rrnn[export]"') from None
    ckpt = load_checkpoint(path)
    data = checkpoint_corpus(path, ckpt, corpus, data_dir, log)
    model = model_from_checkpoint(ckpt).eval()
    lm = StreamingLM(model)
    out = Path(out)
    onnx_export(lm, out, window)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        full = out.with_suffix(".fp32.onnx")
        out.replace(full)
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)  # its advice to pre-process applies to image models
        try:
            quantize_dynamic(str(full), str(out), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
            full.unlink()
    _label(out, ckpt.itos, window)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def ort_step(x, state):
        feeds = dict(zip(names, [x.numpy(), *(s.numpy() for s in state)]))
        return [torch.from_numpy(a) for a in session.run(None, feeds)]

    source = D.batchify(data.split(split), batch)  # (N, B)
    ours = _perplexity(lambda x, s: lm(x, *s), source, window, lm.init_state(batch))
    theirs = _perplexity(ort_step, source, window, lm.init_state(batch))
    return {"file": str(out), "file_bytes": out.stat().st_size, "held_bytes": held_bytes(out),
            "torch_ppl": ours, "onnx_ppl": theirs, "runtime_ppl": theirs, "runtime": "ONNX Runtime",
            "relative": abs(theirs - ours) / ours, "split": split, "batch": batch,
            "window": window, "int8": int8, "recurrent": type(lm.rnn).__name__,
            "weights": weights_note(model)}  # fmt: skip


def _executorch_checkpoint(path, out: Path, window, batch, split, corpus, data_dir, log) -> dict:
    """``rrnn export --format executorch``: the program for ``batch`` streams and its
    parity on ``split`` in the ExecuTorch runtime."""
    ckpt = load_checkpoint(path)
    data = checkpoint_corpus(path, ckpt, corpus, data_dir, log)
    model = model_from_checkpoint(ckpt).eval()
    lm = StreamingLM(model)
    step = executorch_export(lm, out, window, batch)
    source = D.batchify(data.split(split), batch)  # (N, B)
    ours = _perplexity(lambda x, s: lm(x, *s), source, window, lm.init_state(batch))
    theirs = _perplexity(step, source, window, lm.init_state(batch))
    size = out.stat().st_size
    return {"file": str(out), "file_bytes": size, "held_bytes": size,  # weights in the program
            "torch_ppl": ours, "runtime_ppl": theirs, "runtime": "ExecuTorch (XNNPACK)",
            "relative": abs(theirs - ours) / ours, "split": split, "batch": batch,
            "window": window, "int8": False, "recurrent": type(lm.rnn).__name__,
            "weights": weights_note(model)}  # fmt: skip


def _label(path: Path, itos: list[str], window: int) -> None:
    """The vocabulary and the window, in the file's metadata: the file alone then
    generates text (``rrnn generate FILE.onnx``)."""
    import onnx

    from ..fileio import atomic_write_bytes

    model = onnx.load(str(path))
    for key, value in (("rrnn.itos", json.dumps(itos)), ("rrnn.window", str(window))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write_bytes(path, model.SerializeToString())
