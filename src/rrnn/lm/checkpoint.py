"""A run's checkpoint as one typed object: :class:`Progress` (where the run is)
and :class:`Checkpoint` (everything a resume needs), and the model it holds.

On disk a checkpoint stays what it always was, a flat dict of tensors and plain
data (``format``, ``version`` 1 and the keys of :meth:`Checkpoint.to_dict`),
written atomically and read with ``weights_only=True``: every earlier rrnn's
checkpoints load unchanged, and nothing is unpickled. Imports torch,
:mod:`rrnn.fileio` and the language model's modules; nothing of training."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ..fileio import atomic_torch_save
from . import methods
from .config import ModelConfig
from .model import RNNModel

CHECKPOINT_FORMAT = "rrnn-lm-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file is not an rrnn checkpoint, or belongs to another model or corpus."""


@dataclass
class Progress:
    """Where a run is. ``epoch`` epochs are finished and ``batch`` windows of the
    next one trained; ``history`` holds one record per finished epoch (as in
    metrics.jsonl); ``best`` is ``{"epoch": e, "valid_ppl": p}`` of the best
    validation epoch at the final size (1-based), or None; ``elapsed`` the
    training seconds; ``loss_sum`` and ``tokens`` the current epoch's running
    sums. ``hidden`` is the state to go on from after a resume mid-epoch (this
    rank's columns; None at an epoch's start): it travels in
    :attr:`Checkpoint.hidden`, gathered over the ranks."""

    epoch: int = 0
    batch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    elapsed: float = 0.0
    loss_sum: float = 0.0
    tokens: int = 0
    hidden: object = None

    def best_record(self) -> dict | None:
        """The history record of the best validation epoch."""
        best = self.best
        return next((h for h in self.history if best and h["epoch"] == best["epoch"]), None)


# what a checkpoint file stores of the progress: every field but the hidden state
PROGRESS_SAVED = tuple(f.name for f in fields(Progress) if f.name != "hidden")


@dataclass
class Checkpoint:
    """Everything a resume needs: the configs (as their dicts), the model's and
    optimizer's state dicts, the RNG state, the progress, the carried hidden
    state (a list of (L, B, H) tensors, every column, CPU; None at an epoch's
    start), how many metrics.jsonl lines belong to it, the vocabulary and the
    corpus fingerprint, the thread count, the compared method's state (pruning
    masks, ISS) and the kernel paths the run measured."""

    train_config: dict
    model_config: dict
    model: dict
    optimizer: dict
    rng: torch.Tensor
    progress: Progress
    hidden: list[torch.Tensor] | None
    metrics_lines: int
    itos: list[str]
    fingerprint: str
    threads: int | None = None
    compress: dict = field(default_factory=dict)
    dispatch: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The file's dict: the progress fields at the top level, as always."""
        d = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
        for f in fields(self):
            if f.name == "progress":
                d.update({k: getattr(self.progress, k) for k in PROGRESS_SAVED})
            else:
                d[f.name] = getattr(self, f.name)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Checkpoint:
        """A file's dict; the keys later versions added (threads, compress,
        dispatch) default to what a run without them did."""
        progress = Progress(**{k: d[k] for k in PROGRESS_SAVED})
        kept = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "progress"}
        kept["compress"] = d.get("compress") or {}
        kept["dispatch"] = d.get("dispatch") or {}
        return cls(progress=progress, **kept)

    def save(self, path: str | os.PathLike) -> None:
        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Checkpoint:
        """Read a checkpoint (``weights_only=True``), with a clear error for files
        that are missing or are not rrnn language-model checkpoints."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(
                f"{path} is not a readable rrnn checkpoint: torch.load could not read it as "
                f"tensors and plain data ({type(err).__name__}). It may be truncated (a copy "
                "that did not finish), or not written by `rrnn train`; use the run's "
                "checkpoint.pt or best.pt. rrnn never unpickles arbitrary objects."
            ) from None
        if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} is not an rrnn language-model checkpoint (written by `rrnn train`)"
            )
        if d.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint version {d.get('version')!r}; this rrnn reads "
                f"version {CHECKPOINT_VERSION}"
            )
        return cls.from_dict(d)

    def build_model(self, device="cpu") -> RNNModel:
        """The trained model, compacted where an ISS run removed units."""
        model = RNNModel(ModelConfig.from_dict(self.model_config)).to(device)
        try:
            model.load_state_dict(self.model)
        except RuntimeError as err:
            raise CheckpointError(f"checkpoint weights do not fit its model config: {err}") from None
        # an ISS run's units whose groups are all zero are removed: the smaller real model
        return methods.compact_model(model)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    return Checkpoint.load(path)


def model_from_checkpoint(ckpt: Checkpoint, device="cpu") -> RNNModel:
    return ckpt.build_model(device)


def hidden_to_list(hidden) -> list[torch.Tensor]:
    return [hidden] if isinstance(hidden, torch.Tensor) else list(hidden)


def hidden_from_list(items, cell: str):
    return (items[0], items[1]) if cell == "lstm" else items[0]
