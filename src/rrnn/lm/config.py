"""A run's configuration: :class:`TrainConfig` (what ``rrnn train`` takes),
:class:`ModelConfig` (what rebuilds a model; stored in every checkpoint), their
checks, and the choice lists the command line offers.

Imports no torch, so that ``rrnn --help`` and ``rrnn params`` start without it;
modules that build or train models read their choices here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..baselines.sizes import (
    METHODS,
    SCHEDULES,
    check_rank,
    check_sparsity,
    check_target,
    dense_hidden_for,
    rank_for,
    sparsity_for,
    stacked_count,
)
from ..restriction import MODES, count_parameters, num_gates, resolve_sharing_rates

DATASETS = ("ptb", "wikitext-2")  # the built-in corpora (rrnn.lm.data.BUILTIN)
VARIANTS = {"plain": (False, 0.0), "tied-dropout": (True, 0.2)}  # tie, default dropout
LOSSES = ("fused", "torch")
PRECISIONS = ("fp32", "bf16")  # bf16: the fused decoder's GEMMs on bfloat16 operands
BACKENDS = ("rrnn", "torch")
INITS = ("authors", "uniform")
LOWRANK = ("factors", "projection")
# a sweep's axes: the plural flag (--cells) -> the TrainConfig field (cell)
AXES: dict[str, str] = {
    "datasets": "dataset",
    "cells": "cell",
    "sharing_rates": "sharing_rate",
    "variants": "variant",
    "lrs": "lr",
    "inits": "init",
    "seeds": "seed",
    "compresses": "compress",
}


@dataclass(frozen=True)
class StackShape:
    """The recurrent stack a compared method is sized against."""

    cell: str
    embedding_size: int
    hidden_size: int
    layers: int
    sharing_rate: float


# which compression methods read each method option (the help of each flag says the same)
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "target_params": ("dense", "lowrank", "prune", "iss"),
    "rank": ("lowrank",), "lowrank": ("lowrank",),
    "sparsity": ("prune",), "prune_schedule": ("prune",), "prune_freq": ("prune",),
    "compress_start": ("prune",), "compress_ramp": ("prune",), "compress_end": ("prune", "iss"),
    "iss_lambda": ("iss",), "iss_threshold": ("iss",), "iss_cut": ("iss",),
}  # fmt: skip


@dataclass
class CompressionOptions:
    """The compared method of a run (``--compress``; rrnn.lm.methods adds it to the
    loop) and every method's options (docs/compression.md). :class:`TrainConfig`
    inherits these fields, so that the flags, config.json and checkpoints keep one
    flat namespace (every earlier run's files load unchanged);
    ``TrainConfig.compression`` gives them as this object alone."""

    compress: str = "restrict"
    target_params: int | None = None  # None: the restricted model's count at sharing_rate
    rank: int | None = None  # lowrank; None: the rank that meets target_params
    lowrank: str = "factors"
    sparsity: float | None = None  # prune; None: the sparsity that meets target_params
    prune_schedule: str = "narang"
    prune_freq: int = 100
    compress_start: float = 1.0  # epochs: pruning starts after the first epoch
    compress_ramp: float = 0.25  # fraction of training: Narang's ramp
    compress_end: float = 0.5  # fraction of training: pruning ends / the ISS cut
    iss_lambda: float = 7e-5
    iss_threshold: float = 1e-4
    iss_cut: bool = True  # False: the paper's lambda alone decides the widths

    def check(self, shape: StackShape, tied: bool) -> None:
        """Every option valid, and a budget the method can meet on ``shape``."""
        if self.compress not in METHODS:
            raise ValueError(f"compress must be one of {', '.join(METHODS)}, got {self.compress!r}")
        if self.prune_schedule not in SCHEDULES:
            raise ValueError(f"prune schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.prune_schedule!r}")  # fmt: skip
        own = {"rank": "lowrank", "sparsity": "prune"}
        for name, method in own.items():
            if getattr(self, name) is not None and self.compress != method:
                raise ValueError(f"--{name} is an option of --compress {method}, not {self.compress}")
        if self.target_params is not None:
            _positive_int("target_params", self.target_params)
            if self.compress == "restrict":
                raise ValueError("--target-params sizes a compared method (--compress dense, "
                                 "lowrank, prune or iss); the restricted model's size is "
                                 "set by --sharing-rate")  # fmt: skip
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
        if self.rank is not None:  # 0 is an error, not "unset"
            check_rank(self.rank, shape.embedding_size, shape.hidden_size, self.lowrank)
        if self.compress in ("dense", "lowrank", "iss") and not (
            self.compress == "lowrank" and self.rank is not None
        ):
            check_target(self.compress, shape.cell, shape.embedding_size, shape.hidden_size,
                         shape.layers, self.budget(shape), self.lowrank)  # fmt: skip
        _positive_int("prune_freq", self.prune_freq)
        self.resolved_sparsity(shape)  # a budget a pruned model can meet
        for name in ("iss_lambda", "iss_threshold", "compress_start"):
            if not _real(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not (_real(self.compress_ramp) and _real(self.compress_end)
                and 0 <= self.compress_ramp <= self.compress_end <= 1 and self.compress_end > 0):  # fmt: skip
            raise ValueError(
                "--compress-ramp and --compress-end are fractions of training with "
                f"0 <= ramp <= end <= 1, got {self.compress_ramp!r} and {self.compress_end!r}"
            )
        if self.compress == "iss" and tied:
            raise ValueError("--compress iss needs untied weights (variant 'plain'): with tied "
                             "weights the decoder's columns are the embedding's")  # fmt: skip

    def budget(self, shape: StackShape) -> int:
        """The recurrent parameter budget of a compared method: --target-params, else
        the restricted stack's count at the sharing rate."""
        if self.target_params is not None:
            return self.target_params
        return count_parameters(shape.cell, shape.embedding_size, shape.hidden_size,
                                shape.layers, shape.sharing_rate)  # fmt: skip

    def resolved_sparsity(self, shape: StackShape) -> float | None:
        if self.compress != "prune":
            return None
        if self.sparsity is not None:
            return self.sparsity
        return sparsity_for(shape.cell, shape.embedding_size, shape.hidden_size, shape.layers,
                            self.budget(shape))  # fmt: skip

    def check_given(self, given: set[str]) -> None:
        """``rrnn train``: a method option passed for a method that would ignore it is an
        error (a sweep's common flags apply to the runs whose method reads them)."""
        flag = lambda name: "--iss-no-cut" if name == "iss_cut" else "--" + name.replace("_", "-")  # noqa: E731
        for name in sorted(given & set(METHOD_OPTIONS)):
            methods = METHOD_OPTIONS[name]
            if self.compress not in methods:
                raise ValueError(
                    f"{flag(name)} is an option of --compress {' / '.join(methods)}; this run is "
                    f"--compress {self.compress}, which would ignore it: leave it out"
                )
        if "compress_ramp" in given and self.prune_schedule != "narang":
            raise ValueError("--compress-ramp sets the Narang schedule's ramp; --prune-schedule "
                             f"{self.prune_schedule} has none: leave it out")  # fmt: skip
        if "compress_end" in given and self.compress == "iss" and not self.iss_cut:
            raise ValueError("--compress-end places the ISS budget cut, which --iss-no-cut turns "
                             "off: leave one of them out")  # fmt: skip


@dataclass
class TrainConfig(CompressionOptions):
    """A training run. Defaults are the paper's section IV-A."""

    dataset: str | None = "ptb"
    corpus: str | None = None
    data_dir: str | None = None
    cell: str = "lstm"
    sharing_rate: float = 0.5
    layers: int = 3
    embedding_size: int = 200
    hidden_size: int = 200
    variant: str = "plain"
    dropout: float | None = None  # None: the variant's (plain 0, tied-dropout 0.2)
    backend: str = "rrnn"
    init: str = "authors"  # "uniform": the paper's text; see RNNModel.initialize
    epochs: int = 100
    patience: int | None = None  # stop after this many epochs without a better valid ppl
    batch_size: int = 80
    eval_batch_size: int = 80
    bptt: int = 35
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    clip: float = 0.25
    seed: int = 1
    log_interval: int = 100
    device: str = "cpu"
    threads: int | None = None
    max_batches: int | None = None  # cap on batches per split and epoch (dry runs)
    loss: str = "fused"  # "fused": chunked decoder + cross-entropy; "torch": F.cross_entropy
    precision: str = "fp32"  # "bf16": the fused decoder's GEMMs on bfloat16 operands (training only)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.precision == "bf16" and self.loss != "fused":
            raise ValueError(
                "--precision bf16 runs the fused decoder's GEMMs in bfloat16: it needs --loss fused"
            )
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "bptt", "log_interval"):
            _positive_int(name, getattr(self, name))
        for name in ("threads", "max_batches"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.patience is not None:
            _positive_int("patience", self.patience, hint=(
                " (epochs without a better validation perplexity before the run stops); "
                "leave it out to train every epoch of the schedule"))  # fmt: skip
        if not _real(self.lr) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("momentum", "weight_decay", "clip"):
            value = getattr(self, name)
            if not _real(value) or not value >= 0:
                raise ValueError(
                    f"{name} must be a number >= 0, got {value!r}"
                    + ("; --clip 0 turns clipping off" if name == "clip" else "")
                )
        if self.corpus is None and self.dataset is None:
            raise ValueError("pass a dataset (--dataset) or a corpus folder (--corpus)")
        if self.corpus is not None:
            # a run records its corpus by absolute path (and by hash, in the checkpoint),
            # so that it can be evaluated and resumed from any folder
            self.corpus = str(Path(self.corpus).expanduser().absolute())
            self.dataset = None
        self._check_compress()
        mconf = self.model_config(vocab_size=2)  # the cell, sharing rate, sizes and dropout
        if mconf.dropout > 0 and mconf.layers == 1:
            warnings.warn(
                f"dropout {mconf.dropout:g} has no effect with one recurrent layer: it falls "
                "between recurrent layers (as in torch.nn); use --layers 2 or more",
                UserWarning,
                stacklevel=3,
            )

    @property
    def shape(self) -> StackShape:
        """The recurrent stack a compared method is sized against."""
        return StackShape(self.cell, self.embedding_size, self.hidden_size, self.layers,
                          self.sharing_rate)  # fmt: skip

    @property
    def compression(self) -> CompressionOptions:
        """The compared method and its options, as their own object."""
        return CompressionOptions(**{f.name: getattr(self, f.name) for f in fields(CompressionOptions)})

    def _check_compress(self) -> None:
        self.compression.check(self.shape, tied=VARIANTS[self.variant][0])

    def budget(self) -> int:
        """The recurrent parameter budget of a compared method."""
        return self.compression.budget(self.shape)

    def model_config(self, vocab_size: int) -> ModelConfig:
        tie, default_dropout = VARIANTS[self.variant]
        dropout = default_dropout if self.dropout is None else self.dropout
        hidden, rank, rate, backend = self.hidden_size, None, self.sharing_rate, self.backend
        if self.compress != "restrict":
            rate, backend = 0.0, "torch"
        if self.compress == "dense":
            hidden = dense_hidden_for(self.cell, self.embedding_size, self.layers, self.budget())
        elif self.compress == "lowrank":
            rank = self.rank
            if rank is None:
                rank = rank_for(self.cell, self.embedding_size, self.hidden_size, self.layers,
                                self.budget(), self.lowrank)  # fmt: skip
        return ModelConfig(
            vocab_size=vocab_size,
            cell=self.cell,
            sharing_rate=rate,
            layers=self.layers,
            embedding_size=self.embedding_size,
            hidden_size=hidden,
            dropout=dropout,
            tie_weights=tie,
            backend=backend,
            compress=self.compress,
            rank=rank,
            lowrank=self.lowrank,
        )

    def resolved_sparsity(self) -> float | None:
        return self.compression.resolved_sparsity(self.shape)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = dict(d)
        d.setdefault("init", "uniform")  # runs written before --init existed used uniform
        d.setdefault("loss", "torch")  # and before the fused loss, F.cross_entropy
        return cls(**{k: v for k, v in d.items() if k in known})


def check_method_options(cfg: TrainConfig, given: set[str]) -> None:
    """``rrnn train``: a method option passed for a method that would ignore it is an
    error (a sweep's common flags apply to the runs whose method reads them)."""
    cfg.compression.check_given(given)


def _positive_int(name: str, value, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}{hint}")


def _real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint."""

    vocab_size: int
    cell: str = "lstm"
    sharing_rate: float | list = 0.5
    layers: int = 3
    embedding_size: int = 200
    hidden_size: int = 200
    dropout: float = 0.0
    tie_weights: bool = False
    backend: str = "rrnn"  # "torch": a plain torch.nn layer (sharing_rate must be 0)
    # the compression method (rrnn.baselines): "restrict" is the restricted layer above;
    # "dense", "prune" and "iss" train a classical torch.nn layer (pruning masks and the
    # ISS regulariser live in the trainer); "lowrank" factors its matrices
    compress: str = "restrict"
    rank: int | None = None  # lowrank: the factors' rank or the projection's size
    lowrank: str = "factors"  # lowrank: "factors" (unshared) or "projection" (shared)
    widths: list | None = None  # a compacted ISS model: units per layer

    def __post_init__(self) -> None:
        if self.cell not in MODES:
            raise ValueError(f"cell must be one of {', '.join(MODES)}, got {self.cell!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("vocab_size", "layers", "embedding_size", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        resolve_sharing_rates(self.sharing_rate, self.layers, num_gates(self.cell))
        self._check_compress()
        if self.backend == "torch" and self.sharing_rate not in (0, 0.0):
            raise ValueError(
                f"backend='torch' builds a classical torch.nn layer; sharing_rate must be 0, "
                f"got {self.sharing_rate!r}"
            )
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(
                f"tied weights need embedding size == hidden size, got embedding_size="
                f"{self.embedding_size} and hidden_size={self.hidden_size}; set them equal "
                "or untie the weights (variant 'plain')"
            )
        if not 0.0 <= float(self.dropout) <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {self.dropout!r}")

    def _check_compress(self) -> None:
        if self.compress not in METHODS:
            raise ValueError(f"compress must be one of {', '.join(METHODS)}, got {self.compress!r}")
        if self.compress != "restrict" and self.sharing_rate not in (0, 0.0):
            raise ValueError(
                f"compress={self.compress!r} builds a classical layer; its sharing_rate must be 0"
            )
        if self.compress == "lowrank":
            if self.lowrank not in LOWRANK:
                raise ValueError(f"lowrank must be one of {', '.join(LOWRANK)}, got {self.lowrank!r}")
            check_rank(self.rank, self.embedding_size, self.hidden_size, self.lowrank)
            if self.tie_weights and self.lowrank == "projection":
                raise ValueError(
                    "tied weights need the decoder to read hidden_size features; a projection "
                    f"gives {self.rank}: use variant 'plain' or --lowrank factors"
                )
        elif self.rank is not None:
            raise ValueError(f"rank is for compress='lowrank', not {self.compress!r}")
        if self.widths is not None:
            if self.compress != "iss" or len(self.widths) != self.layers:
                raise ValueError("widths (a compacted ISS model) needs compress='iss' and one width per layer")
            stacked_count(self.cell, self.embedding_size, self.widths)

    @property
    def output_size(self) -> int:
        """What the decoder reads: the last layer's width."""
        if self.widths is not None:
            return self.widths[-1]
        if self.compress == "lowrank" and self.lowrank == "projection":
            return self.rank
        return self.hidden_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model config has unknown fields {sorted(unknown)}")
        return cls(**d)
