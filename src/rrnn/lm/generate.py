"""Evaluating a checkpoint on a split, and sampling text from it."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext

import numpy as np
import torch

from . import data as D
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, model_from_checkpoint
from .config import TrainConfig
from .evaluation import split_perplexity


def evaluate_checkpoint(
    path,
    split: str = "test",
    batch_size: int | None = None,
    data_dir: str | None = None,
    bptt: int | None = None,
    device="cpu",
    log=print,
    corpus: str | None = None,
) -> dict:
    """Perplexity of a checkpoint on a whole split of the corpus it was trained on.

    ``batch_size`` 1 gives the exact streaming value (every token but the first
    is predicted once, from the whole history). ``corpus`` / ``data_dir`` point
    at a moved copy of the run's data; it must have the same files (hashes)."""
    for name, value in (("--batch-size", batch_size), ("--bptt", bptt)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    ckpt = load_checkpoint(path)
    cfg = TrainConfig.from_dict(ckpt.train_config)
    data = checkpoint_corpus(path, ckpt, corpus, data_dir, log)
    model = model_from_checkpoint(ckpt, device)
    batch_size = batch_size or cfg.eval_batch_size
    bptt = bptt or cfg.bptt
    D.check_batching(data, batch_size, 1, (split,), "--batch-size")
    source = D.batchify(data.split(split), batch_size).to(device)
    ppl = split_perplexity(model, source, bptt)
    return {
        "checkpoint": str(path),
        "split": split,
        "batch_size": batch_size,
        "bptt": bptt,
        "ppl": ppl,
        "tokens": (source.size(0) - 1) * source.size(1),
        "epoch": ckpt.progress.epoch,
    }


def checkpoint_corpus(path, ckpt: Checkpoint, corpus=None, data_dir=None, log=print) -> D.Corpus:
    """The corpus a checkpoint was trained on (or a moved copy with the same files),
    with errors that say which flag points at it."""
    cfg = TrainConfig.from_dict(ckpt.train_config)
    if corpus is not None and cfg.corpus is None:
        raise ValueError(
            f"{path} was trained on the built-in dataset {cfg.dataset}; use --data-dir to "
            "point at its files, not --corpus"
        )
    folder = corpus or cfg.corpus
    try:
        data = D.load_corpus(cfg.dataset, folder, data_dir or cfg.data_dir, log=log)
    except D.DataError as err:
        where = f"the corpus in {cfg.corpus}" if cfg.corpus else f"the dataset {cfg.dataset}"
        flag = "--corpus DIR" if cfg.corpus else "--data-dir DIR"
        raise D.DataError(
            f"{err}. {path} was trained on {where}; pass {flag} to point at a copy"
        ) from None
    if data.fingerprint != ckpt.fingerprint:
        raise CheckpointError(
            f"{path} was trained on other data than {data.name} found now (its files' hashes "
            "differ); evaluate it on the corpus it was trained on"
        )
    return data


@torch.no_grad()
def generate(
    path,
    words: int = 100,
    temperature: float = 1.0,
    seed: int | None = None,
    prompt: str | None = None,
    device="cpu",
) -> str:
    """Sample ``words`` words after ``prompt`` (default: the start of a sentence),
    from a checkpoint, or from an ONNX file written by ``rrnn export`` (``.onnx``:
    run in ONNX Runtime, the vocabulary read from the file's metadata)."""
    if not temperature > 0:
        raise ValueError(f"--temperature must be positive, got {temperature!r}")
    if words < 0:
        raise ValueError(f"--words must be >= 0, got {words!r}")
    if str(path).endswith(".onnx"):
        itos, step = onnx_generator(path)
        return _sample(step, itos, words, temperature, seed, prompt, device)
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, device).eval()
    state = {"hidden": model.init_hidden(1)}

    def step(ids):  # (T, 1) -> logits of the last token (V,)
        logits, state["hidden"] = model(ids, state["hidden"])
        return logits[-1]

    with model.rnn.frozen() if hasattr(model.rnn, "frozen") else nullcontext():
        return _sample(step, ckpt.itos, words, temperature, seed, prompt, device)


def _sample(step, itos: list[str], words, temperature, seed, prompt, device) -> str:
    """Feed the prompt, then one sampled word at a time, through ``step``."""
    stoi = {w: i for i, w in enumerate(itos)}
    context = prompt.split() if prompt else [D.EOS]
    unknown = [w for w in context if w not in stoi]
    if unknown:
        if D.UNK not in stoi:
            raise ValueError(
                f"prompt words {unknown} are not in the vocabulary, which has no {D.UNK}"
            )
        print(
            f"prompt words not in the vocabulary, read as {D.UNK}: {' '.join(unknown)}",
            file=sys.stderr,
        )
    ids = torch.tensor([stoi.get(w, stoi.get(D.UNK, 0)) for w in context], device=device)
    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    out = [] if not prompt else list(context)
    logits = step(ids.view(-1, 1))  # (V,)
    for _ in range(words):  # one streaming step per word
        probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(itos[nxt])
        logits = step(torch.tensor([[nxt]], device=device))
    text = " ".join(out)
    return text.replace(f" {D.EOS} ", "\n").replace(D.EOS, "\n").strip()


def onnx_generator(path):
    """``(itos, step)`` for an ONNX file from ``rrnn export --window 1``: ``step(ids)``
    feeds ids ``(T, 1)`` one at a time, carrying the state, and returns the last
    token's logits ``(V,)``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError('running an ONNX file needs the export extra: pip install "rrnn[export]"') from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if "rrnn.itos" not in meta:
        raise ValueError(f"{path} was not written by `rrnn export` (no vocabulary in its metadata)")
    if meta.get("rrnn.window") != "1":
        raise ValueError(f"{path} takes windows of {meta.get('rrnn.window')} tokens; generation "
                         "feeds one at a time: export it with --window 1 (the default)")  # fmt: skip
    inputs = session.get_inputs()
    # the batch is the graph's one symbolic dimension: one stream here
    state = [np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype=np.float32)
             for i in inputs[1:]]  # fmt: skip

    def step(ids):
        nonlocal state
        for token in ids.view(-1).tolist():
            feeds = {inputs[0].name: np.array([[token]], dtype=np.int64)}
            feeds.update({i.name: s for i, s in zip(inputs[1:], state)})
            logits, *state = session.run(None, feeds)
        return torch.from_numpy(logits[-1, 0])

    return json.loads(meta["rrnn.itos"]), step
