"""The flags more than one command shares: the training settings (`rrnn train`
takes each once, `rrnn sweep` as comma-separated axes), the list parsers and the
--device check. Imports no torch at module level."""

from __future__ import annotations

import argparse

from ..lm import config as C  # torch-free: the choices and the defaults
from ..restriction import MODES


def rate_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rates must be comma-separated numbers such as 1,0.5,0; got {text!r}"
        ) from None


def cell_list(text: str) -> list[str]:
    cells = [c.strip().lower() for c in text.split(",") if c.strip()]
    bad = [c for c in cells if c not in MODES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown cell {bad[0]!r}; choose from {', '.join(MODES)}")
    return cells


def size_list(text: str) -> list[str]:
    known = ("paper", "large", "stream")
    sizes = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in sizes if v not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown size {bad[0]!r}; choose from {', '.join(known)}")
    return sizes


def cell_and_rate_flags(p, rates_default: str) -> None:
    """--cells and --rates of the commands that take a grid of layers (params, bench)."""
    p.add_argument("--cells", type=cell_list, default=list(MODES),
                   help=f"comma-separated cells (default {','.join(MODES)})")  # fmt: skip
    p.add_argument("--rates", type=rate_list, default=None,
                   help=f"comma-separated sharing rates (default {rates_default})")  # fmt: skip


def _axis(g, sweep: bool, flag: str, help: str, type=None, choices=None, metavar=None) -> None:
    """A setting that `rrnn train` takes once and `rrnn sweep` as a comma-separated
    axis (``--cell`` -> ``--cells``)."""
    if sweep:
        plural = next(a for a, f in C.AXES.items() if f == flag.replace("-", "_"))
        values = f" from {', '.join(choices)}" if choices else ""
        g.add_argument(
            f"--{plural.replace('_', '-')}",
            dest=plural,
            default=None,
            metavar="LIST",
            help=f"comma-separated values{values}: {help}",
        )
    else:
        g.add_argument(
            f"--{flag}", type=type, choices=choices, default=None, metavar=metavar, help=help
        )


def _int_flag(g, flag: str, help: str, metavar: str = "N") -> None:
    g.add_argument(f"--{flag}", type=int, default=None, metavar=metavar, help=help)


def _float_flag(g, flag: str, help: str, metavar: str = "X") -> None:
    g.add_argument(f"--{flag}", type=float, default=None, metavar=metavar, help=help)


def _data_flags(p, d, sweep: bool) -> None:
    g = p.add_argument_group("data")
    _axis(
        g, sweep, "dataset", f"built-in corpus (default {d.dataset})", choices=list(C.DATASETS)
    )
    g.add_argument(
        "--corpus",
        metavar="DIR",
        default=None,
        help="your own corpus: a folder with train.txt, valid.txt, test.txt (overrides --dataset)",
    )
    g.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="folder holding ptb/ and wikitext-2/ (default $RRNN_DATA_DIR, else ~/.cache/rrnn); missing files are downloaded",
    )


def _model_flags(p, d, sweep: bool) -> None:
    g = p.add_argument_group("model")
    _axis(g, sweep, "cell", f"recurrent cell (default {d.cell})", choices=list(MODES))
    _axis(
        g,
        sweep,
        "sharing-rate",
        f"sharing rate in [0, 1]; 0 is the classical cell (default {d.sharing_rate})",
        type=float,
        metavar="R",
    )
    _int_flag(g, "layers", f"recurrent layers (default {d.layers})")
    _int_flag(g, "embedding-size", f"embedding size E (default {d.embedding_size})")
    _int_flag(g, "hidden-size", f"hidden size H (default {d.hidden_size})")
    _axis(
        g,
        sweep,
        "variant",
        "plain: untied, no dropout; tied-dropout: tied embedding/decoder and dropout 0.2 "
        f"between recurrent layers (default {d.variant})",
        choices=list(C.VARIANTS),
    )
    _float_flag(
        g, "dropout", "dropout between recurrent layers (default: the variant's, 0 or 0.2)", "P"
    )
    g.add_argument(
        "--backend",
        choices=list(C.BACKENDS),
        default=None,
        help="rrnn: restricted layer; torch: plain torch.nn layer, needs --sharing-rate 0 (default rrnn)",
    )
    _axis(
        g,
        sweep,
        "init",
        f"initial weights (default {d.init}). authors: what produced the paper's numbers, "
        "PyTorch's defaults (embedding N(0, 1)); uniform: the embedding and decoder "
        "uniform(-0.1, 0.1), decoder bias 0, as the paper's text and pytorch/examples",
        choices=list(C.INITS),
    )


def _compress_flags(p, d, sweep: bool) -> None:
    g = p.add_argument_group(
        "compression (the methods compared with restriction; docs/compression.md)"
    )
    _axis(
        g, sweep, "compress",
        "restrict: the restricted layer at --sharing-rate; dense: a smaller classical layer; "
        "lowrank: factored matrices or a shared projection; prune: gradual magnitude pruning; "
        "iss: intrinsic sparse structures (group Lasso, compacted). The compared methods "
        "meet --target-params, by default the restricted model's count at --sharing-rate "
        f"(default {d.compress})",
        choices=list(C.METHODS),
    )  # fmt: skip
    _int_flag(g, "target-params", "recurrent parameter budget of the compared methods "
              "(default: the restricted model's count at --sharing-rate)")  # fmt: skip
    _int_flag(g, "rank", "lowrank: the rank of the factors or the projection size (default: "
              "the one that meets the budget)")  # fmt: skip
    g.add_argument("--lowrank", choices=list(C.LOWRANK), default=None,
                   help="lowrank: unshared factors W = A B, or one shared projection per "
                   f"layer (the LSTM's proj_size) (default {d.lowrank})")  # fmt: skip
    _float_flag(g, "sparsity", "prune: the fraction of weight entries removed, in [0, 1) "
                "(default: the one that meets the budget)", "S")  # fmt: skip
    g.add_argument("--prune-schedule", choices=list(C.SCHEDULES), default=None,
                   help="prune: Narang et al.'s thresholds (approximately meet the sparsity) or "
                   f"Zhu and Gupta's cubic sparsity ramp (exactly) (default {d.prune_schedule})")  # fmt: skip
    _int_flag(g, "prune-freq", f"prune: iterations between mask updates (default {d.prune_freq})")
    _float_flag(g, "compress-start", "prune: the epoch (may be fractional) where pruning "
                f"starts (default {d.compress_start:g})", "EPOCHS")  # fmt: skip
    _float_flag(g, "compress-ramp", "prune (narang): the fraction of training where the "
                f"threshold's slope rises (default {d.compress_ramp:g})", "F")  # fmt: skip
    _float_flag(g, "compress-end", "prune: the fraction of training where masks freeze; iss: "
                f"where the budget cut happens (default {d.compress_end:g})", "F")  # fmt: skip
    _float_flag(g, "iss-lambda", "iss: the group Lasso weight with the per-token mean loss "
                f"(default {d.iss_lambda:g}, the reference's 0.00245 over 35 summed steps)")  # fmt: skip
    g.add_argument("--iss-no-cut", dest="iss_cut", action="store_const", const=False,
                   default=None, help="iss: no budget cut; the group Lasso alone decides "
                   "which units go (the paper's method; the size is then not controlled)")  # fmt: skip
    _float_flag(g, "iss-threshold", f"iss: weights below this are zeroed after each step "
                f"(default {d.iss_threshold:g})")  # fmt: skip


def _optim_flags(p, d, sweep: bool) -> None:
    g = p.add_argument_group("optimisation (the paper's section IV-A by default)")
    g.add_argument(
        "--loss", choices=list(C.LOSSES), default=None,
        help="fused: the decoder and cross-entropy in chunks, without the (T*B, V) "
        "matrices (equal within float32 rounding, faster); torch: F.cross_entropy of the "
        f"logits (default {d.loss}; runs from before it resume with torch)",
    )  # fmt: skip
    g.add_argument(
        "--precision", choices=list(C.PRECISIONS), default=None,
        help="bf16: the fused decoder's three GEMMs (most of a PTB step) on bfloat16 copies "
        "of their operands, as torch.autocast would; the softmax, loss, recurrent layers and "
        "evaluation stay float32. Needs a CPU with bfloat16 instructions or a GPU; its "
        f"perplexity cost is in docs/benchmarks.md (default {d.precision})",
    )  # fmt: skip
    _int_flag(g, "epochs", f"epochs; the cosine schedule spans them (default {d.epochs})")
    _int_flag(
        g, "patience", "stop a run after N epochs without a better validation perplexity; "
        "the cosine schedule still spans --epochs, so every epoch's lr is the full run's "
        "(default: off, every epoch is trained)",
    )  # fmt: skip
    _int_flag(g, "batch-size", f"training batch size (default {d.batch_size})")
    _int_flag(
        g,
        "eval-batch-size",
        f"evaluation batch size; 1 gives the exact streaming perplexity (default {d.eval_batch_size})",
    )
    _int_flag(g, "bptt", f"truncated backpropagation length (default {d.bptt})")
    _axis(
        g,
        sweep,
        "lr",
        f"initial SGD learning rate (default {d.lr}, the paper's text; the authors' code "
        "used 10 for the published numbers)",
        type=float,
        metavar="X",
    )
    _float_flag(g, "momentum", f"SGD momentum (default {d.momentum})")
    _float_flag(g, "weight-decay", f"weight decay (default {d.weight_decay})")
    _float_flag(g, "clip", f"gradient-norm clipping (default {d.clip})")
    _axis(g, sweep, "seed", f"random seed (default {d.seed})", type=int, metavar="N")


def _run_flags(p, d) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="run directory (default runs/<dataset>-<cell>-r<rate>-<variant>); a temp folder with --dry-run",
    )
    g.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint.pt"
    )
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="smoke test: one epoch of three batches of every split",
    )


def _machine_flags(p, d) -> None:
    g = p.add_argument_group("machine and logging")
    _int_flag(g, "log-interval", f"batches between log records (default {d.log_interval})")
    g.add_argument("--device", default=None, help="cpu or cuda (default cpu)")
    _int_flag(
        g, "threads", "torch.set_num_threads(N) (per run in a sweep; default: the cores / --jobs)"
    )


def train_flags(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Flags of `rrnn train` (and, with the axes plural, of `rrnn sweep`). Defaults
    are None here, so that --resume can tell which settings the user gave; the real
    defaults are TrainConfig's."""
    d = C.TrainConfig()
    _data_flags(p, d, sweep)
    _model_flags(p, d, sweep)
    _compress_flags(p, d, sweep)
    _optim_flags(p, d, sweep)
    if not sweep:
        _run_flags(p, d)
    _machine_flags(p, d)


NOT_CONFIG = {"command", "func", "out", "resume", "overwrite", "dry_run"}


def check_device(device: str | None) -> None:
    """--device, checked before any work, in every command that takes it."""
    import torch

    if device is None:
        return
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: this torch build or machine has no CUDA "
            "(torch.cuda.is_available() is False); use --device cpu"
        )
