"""The ``rrnn`` command. Each subcommand parses its flags here (choices and
defaults from :mod:`rrnn.lm.config`) and imports its implementation lazily, so
``rrnn --help`` and ``rrnn params`` run without importing torch."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .lm import config as C  # torch-free: the choices and the defaults
from .restriction import MODES


def _rates(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rates must be comma-separated numbers such as 1,0.5,0; got {text!r}"
        ) from None


def _cells(text: str) -> list[str]:
    cells = [c.strip().lower() for c in text.split(",") if c.strip()]
    bad = [c for c in cells if c not in MODES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown cell {bad[0]!r}; choose from {', '.join(MODES)}")
    return cells


def _sizes(text: str) -> list[str]:
    known = ("paper", "large", "stream")
    sizes = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in sizes if v not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown size {bad[0]!r}; choose from {', '.join(known)}")
    return sizes


def cmd_params(args: argparse.Namespace) -> int:
    from .paper import TABLE_II_RATES
    from .params_table import build_rows, format_table

    table = build_rows(
        cells=args.cells,
        rates=tuple(args.rates) if args.rates else TABLE_II_RATES,
        input_size=args.input_size,
        hidden_size=args.hidden_size,
        layers=args.layers,
        bias=not args.no_bias,
        bidirectional=args.bidirectional,
        offset=args.offset,
    )
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(format_table(table, args.input_size, args.hidden_size, args.layers))
    return 0


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


def _train_flags(p: argparse.ArgumentParser, sweep: bool = False) -> None:
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


_NOT_CONFIG = {"command", "func", "out", "resume", "overwrite", "dry_run"}


def _check_device(device: str | None) -> None:
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


def cmd_train(args: argparse.Namespace) -> int:
    import shutil

    from .lm.train import (
        TrainConfig,
        TrainingDiverged,
        check_method_options,
        dry_run_config,
        temp_run_dir,
        train,
    )

    _check_device(args.device)
    given = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and v is not None}
    cfg = TrainConfig(**given)
    if not args.resume:  # a resumed run keeps its own method; its settings are checked then
        check_method_options(cfg, set(given))
    if args.dry_run:
        cfg = dry_run_config(cfg)
    out, temporary = args.out, False
    if out is None:
        if args.resume:
            raise ValueError("--resume needs --out DIR, the run to continue")
        name = cfg.dataset if cfg.corpus is None else "corpus"
        temporary = args.dry_run
        out = (
            temp_run_dir()
            if args.dry_run
            else f"runs/{name}-{cfg.cell}-r{cfg.sharing_rate:g}-{cfg.variant}"
        )
    try:
        result = train(cfg, out, resume=args.resume, overwrite=args.overwrite, explicit=set(given))
    except TrainingDiverged as err:
        print(f"rrnn train: {err}", file=sys.stderr)
        return 3
    finally:
        if temporary:  # a dry run without --out keeps nothing
            shutil.rmtree(out, ignore_errors=True)
    if temporary:
        print(f"dry run finished: test ppl {result['test_ppl']:.2f}; nothing was kept")
        return 0
    if result["status"] == "interrupted":
        return 130
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    stopped = (
        f"; stopped by patience after epoch {result['stopped_epoch']} of {result['epochs_planned']}"
        if result["status"] == "early-stopped"
        else ""
    )
    print(
        f"run {out}: test ppl {result['test_ppl']:.2f} at the best validation epoch "
        f"{result['best_epoch']} (valid ppl {result['valid_ppl']:.2f}); "
        f"{result['rnn_params']:,} recurrent parameters{stopped}"
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments.sweep import (
        AXES,
        Sweep,
        check_data,
        expand,
        parse_grid,
        parse_list,
        record_grid,
    )
    from .lm.train import FINISHED

    axes = {a: parse_list(a, getattr(args, a)) for a in AXES if getattr(args, a) is not None}
    grids = [parse_grid(text) for text in args.grid or []]
    skip = _NOT_CONFIG | set(AXES) | {"grid", "jobs", "launcher", "ray_address", "list"}
    base = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    for key in ("corpus", "data_dir"):  # runs are found from anywhere, and by Ray workers
        if base.get(key):
            base[key] = str(Path(base[key]).expanduser().resolve())
    threads = base.pop("threads", None)
    runs = expand(base, axes, grids)
    out = Path(args.out)
    sweep = Sweep(out, runs, jobs=args.jobs, threads=threads, log=lambda m: print(m, flush=True))
    print(sweep.plan(), flush=True)
    if args.list:
        return 0
    check_data([r for r in runs if r.state in ("new", "resume")])  # before any folder or run
    out.mkdir(parents=True, exist_ok=True)
    request = {"axes": axes, "grids": grids, "common": base}
    record_grid(out, request, runs)
    if args.launcher == "ray":
        results = sweep.run_ray(args.ray_address)
    else:
        results = sweep.run_local()
    bad = {n: r for n, r in results.items() if r not in FINISHED}
    conflicts = [r for r in runs if r.state == "conflict"]
    for run in conflicts:
        print(f"conflict {run.name}: {run.detail}; use another --out for these settings")
    if any(r == "interrupted" for r in bad.values()):
        return 130
    return 1 if bad or conflicts else 0


def cmd_report(args: argparse.Namespace) -> int:
    from .experiments.report import write_report

    if args.latency:
        import torch

        from .experiments.latency import measure_sweep

        if args.threads:
            torch.set_num_threads(args.threads)
        elsewhere = args.out is not None and Path(args.out).resolve() != Path(args.sweep_dir).resolve()
        measure_sweep(args.sweep_dir, dest_dir=args.out if elsewhere else None)
    result = write_report(args.sweep_dir, args.out, args.rule, machine=args.machine)
    print(
        f"wrote {result['report']}, {result['csv']}" + "".join(f", {p}" for p in result["figures"])
    )
    for c in result["claims"]:
        print(f"claim {c['claim']}: {c['verdict']}")
    return 0


MIN_BENCH_REPEATS = 5


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import SIZES, markdown, run_grid
    from .fileio import atomic_write_text, describe_machine, machine

    _check_device(args.device)
    for flag, value in (("--repeats", args.repeats), ("--stream-repeats", args.stream_repeats)):
        if value < MIN_BENCH_REPEATS:  # a median and its interquartile range need several
            raise ValueError(
                f"{flag} {value}: a ratio's median and interquartile range need at least "
                f"{MIN_BENCH_REPEATS} repeats; use {flag} {MIN_BENCH_REPEATS} or more"
            )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.retune:
        from .kernels import tuning

        path = tuning.cache_path(tuning.machine_key()[0])
        path.unlink(missing_ok=True)
        tuning.forget()
        print(f"forgot the measured dispatch in {path}")
    torch.manual_seed(0)
    print(
        f"{describe_machine(machine())}, {torch.get_num_threads()} threads, device "
        f"{args.device}; ratios > 1: rrnn faster (latency: < 1 is faster)",
        flush=True,
    )
    sizes = args.sizes or list(SIZES)
    records = run_grid(
        args.cells,
        args.rates or (0.0, 0.5, 0.9),
        sizes,
        args.repeats,
        args.stream_repeats,
        args.stream_block,
        log=lambda m: print(m, flush=True),
        device=args.device,
    )
    table = markdown(records)
    print()
    print(table)
    if args.json:
        meta = {
            **machine(),
            "device": args.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "stream_repeats": args.stream_repeats,
            "stream_block": args.stream_block,
        }
        atomic_write_text(
            Path(args.json), json.dumps({"meta": meta, "results": records}, indent=2) + "\n"
        )
    if args.markdown:
        atomic_write_text(Path(args.markdown), table + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .lm.export import export_checkpoint

    for name in ("window", "batch_size"):
        value = getattr(args, name)
        if value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    r = export_checkpoint(args.checkpoint, args.out, window=args.window, int8=args.int8,
                          batch=args.batch_size, split=args.split, corpus=args.corpus,
                          data_dir=args.data_dir, format=args.format)  # fmt: skip
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    what = "int8 cost" if r["int8"] else "parity"
    print(
        f"wrote {r['file']}: {r['file_bytes']:,} bytes, {r['held_bytes']:,} held by "
        f"{r['runtime']} ({r['recurrent']}); {r['split']} ppl {r['runtime_ppl']:.4f} in "
        f"{r['runtime']}, {r['torch_ppl']:.4f} in PyTorch ({what}: {r['relative']:.2e} "
        f"relative; batch {r['batch']}, windows of {r['window']})"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .lm.generate import evaluate_checkpoint

    _check_device(args.device)
    r = evaluate_checkpoint(
        args.checkpoint,
        args.split,
        args.batch_size,
        args.data_dir,
        args.bptt,
        args.device,
        corpus=args.corpus,
    )
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(
            f"{r['split']} ppl {r['ppl']:.2f} ({r['tokens']:,} tokens, batch size "
            f"{r['batch_size']}, bptt {r['bptt']}, checkpoint after epoch {r['epoch']})"
        )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .lm.generate import generate

    _check_device(args.device)
    print(
        generate(args.checkpoint, args.words, args.temperature, args.seed, args.prompt, args.device)
    )
    return 0


def _sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="a grid of training runs, skipped/resumed/started, on local processes or Ray",
        description="Train every configuration of a grid, one run directory each under "
        "--out. Invoked again with the same --out, finished runs are skipped, stopped ones "
        "resumed from their checkpoint and missing ones started; a different grid adds runs. "
        "Axes take comma-separated lists (--cells lstm,gru --sharing-rates 0,0.5,1); every "
        "other flag of `rrnn train` applies to all runs (a method option, such as "
        "--prune-schedule or --iss-lambda, to the runs whose method reads it). Ctrl-C "
        "checkpoints the running "
        "runs and stops.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (required)")
    p.add_argument(
        "--grid",
        action="append",
        metavar="SPEC",
        help='a product of axes, e.g. "cells=gru sharing-rates=0,0.5 lrs=10"; repeatable: '
        "the sweep is the union of the --grid products, and the axis flags (--cells, ...) "
        "then only fill the axes a --grid does not name (they add no product of their own)",
    )
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="runs trained at once (default 1)"
    )
    p.add_argument(
        "--launcher",
        choices=["local", "ray"],
        default="local",
        help="local: --jobs processes on this machine (default); ray: each run a Ray task "
        '(needs pip install "rrnn[ray]")',
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join (default: start a local Ray instance; 'auto' joins a "
        "running one)",
    )
    p.add_argument(
        "--list", action="store_true", help="print the runs and their state; train nothing"
    )
    _train_flags(p, sweep=True)
    p.set_defaults(func=cmd_sweep)


def _report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="tables, figures and the paper's claims from a sweep folder",
        description="Read every run under SWEEP_DIR and write report.md (tables in the "
        "paper's shape with its numbers beside ours, the paper's claims judged on the "
        "runs), report.csv and PNG figures (perplexity against recurrent parameters, "
        "learning curves).",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the --out folder of rrnn sweep")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write (default SWEEP_DIR)")
    p.add_argument(
        "--rule",
        choices=["best-valid", "min-test"],
        default="best-valid",
        help="best-valid (default): test perplexity at the best validation epoch; min-test: "
        "the authors' convention, the minimum test perplexity over all epochs (optimistic)",
    )
    p.add_argument(
        "--machine",
        default=None,
        metavar="TEXT",
        help="what the runs ran on, for runs whose summaries do not record it",
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="first time every finished run's best.pt (batch 1 streaming and batch 80 "
        "sequences, beside the full-size torch.nn stack) into its latency.json; the "
        "compression section and pareto-latency.png use it. Run it on an idle machine",
    )
    p.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="torch threads for --latency (default torch's)",
    )  # fmt: skip
    p.set_defaults(func=cmd_report)


def _params_parser(sub) -> None:
    p = sub.add_parser(
        "params",
        help="exact recurrent parameter counts (the paper's Table II by default)",
        description="Exact parameter counts of restricted RNN/GRU/LSTM stacks. With the "
        "default sizes it prints the paper's Table II beside our counts.",
    )
    p.add_argument(
        "--cells",
        type=_cells,
        default=list(MODES),
        help="comma-separated cells (default: rnn,gru,lstm)",
    )
    p.add_argument(
        "--rates",
        type=_rates,
        default=None,
        help="comma-separated sharing rates (default: the paper's 1,0.95,0.9,0.7,0.5,0.3,0.1,0)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=200,
        help="input (embedding) size of layer 0 (default 200)",
    )
    p.add_argument("--hidden-size", type=int, default=200, help="hidden size (default 200)")
    p.add_argument("--layers", type=int, default=3, help="number of recurrent layers (default 3)")
    p.add_argument("--no-bias", action="store_true", help="count layers without biases")
    p.add_argument("--bidirectional", action="store_true", help="count bidirectional layers")
    p.add_argument(
        "--offset",
        type=int,
        default=None,
        help="number added in the millions row (default: 9,800 = V - E at the paper's sizes, else 0)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_params)


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a language model (the paper's setup by default)",
        description="Train a word-level language model with a restricted (or classical) "
        "recurrent layer. Defaults are the paper's: 3 layers, E = H = 200, SGD lr 1 with "
        "momentum 0.9 and cosine annealing, clip 0.25, 100 epochs, batch 80, bptt 35.",
    )
    _train_flags(p)
    p.set_defaults(func=cmd_train)


def _bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="speed of restricted layers against torch.nn (training, inference, streaming)",
        description="Time restricted layers against torch.nn of the same size in one run: "
        "forward+backward tokens/s, forward tokens/s and per-token latency, as ratios, "
        "medians of interleaved repeats. Sizes: paper (B=80, T=35, H=200, L=3), large "
        "(B=20, T=35, H=650, L=2), stream (B=1, one step, H=200, L=3).",
    )
    p.add_argument(
        "--cells",
        type=_cells,
        default=list(MODES),
        help="comma-separated cells (default rnn,gru,lstm)",
    )
    p.add_argument(
        "--rates",
        type=_rates,
        default=None,
        help="comma-separated sharing rates (default 0,0.5,0.9)",
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="comma-separated sizes among paper,large,stream (default all)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="timed repeats per implementation and pass (default 10)",
    )
    p.add_argument(
        "--stream-repeats",
        type=int,
        default=30,
        help="timed blocks for the streaming size (default 30)",
    )
    p.add_argument(
        "--stream-block",
        type=int,
        default=20,
        help="consecutive calls per timed block at the streaming size, so that each model "
        "runs with its weights in cache, as in real streaming (default 20)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", default=None, metavar="PATH", help="write every measurement as JSON")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the Markdown table")
    p.add_argument(
        "--retune",
        action="store_true",
        help="forget the kernel paths measured on this machine (its dispatch cache file) "
        "and measure them again as the grid meets each shape",
    )
    p.set_defaults(func=cmd_bench)


def _eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity of a checkpoint on a split",
        description="Evaluate a checkpoint on a whole split of the corpus it was trained on.",
    )
    p.add_argument("checkpoint", help="checkpoint.pt or best.pt of a run")
    p.add_argument(
        "--split",
        choices=["train", "valid", "test"],
        default="test",
        help="split to evaluate (default test)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="evaluation batch size (default: the run's); 1 gives the exact streaming perplexity",
    )
    p.add_argument(
        "--bptt",
        type=int,
        default=None,
        help="window length (default: the run's); does not change the result, only memory and speed",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the built-in dataset (default: the run's, $RRNN_DATA_DIR, ~/.cache/rrnn)",
    )
    p.add_argument(
        "--corpus",
        default=None,
        metavar="DIR",
        help="a moved copy of the run's own corpus folder (default: where it was trained); "
        "checked against the files' hashes",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)


def _generate_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="sample text from a checkpoint",
        description="Sample words from a trained language model: a checkpoint, or an ONNX file "
        "written by `rrnn export` (run in ONNX Runtime).",
    )
    p.add_argument("checkpoint", help="checkpoint.pt or best.pt of a run, or a FILE.onnx from rrnn export")
    p.add_argument("--words", type=int, default=100, help="number of words to sample (default 100)")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="softmax temperature; lower is more conservative (default 1.0)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    p.add_argument(
        "--prompt", default=None, help="text to continue (default: the start of a sentence)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(func=cmd_generate)


def _export_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, with its parity measured",
        description="Export a trained language model to ONNX as a streaming generator "
        "(tokens and state in, logits and state out; any batch size), then measure it in "
        "ONNX Runtime: file size, the weight bytes the runtime holds, and the perplexity "
        "on held-out text beside PyTorch's. The recurrent stack goes in its export form "
        "(rrnn.deploy.export_form: a restricted layer's compact blocks, low-rank factors, "
        'a projected LSTM in plain ops). Needs pip install "rrnn[export]".',
    )
    p.add_argument("checkpoint", help="checkpoint.pt or best.pt of a run")
    p.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--format", choices=["onnx", "executorch"], default="onnx",
                   help="onnx (default; any batch size) or executorch (XNNPACK, a .pte for "
                   "--batch-size streams; pip install \"rrnn[executorch]\")")  # fmt: skip
    p.add_argument("--window", type=int, default=1, metavar="T",
                   help="tokens per call the graph is exported for (default 1: streaming)")  # fmt: skip
    p.add_argument("--int8", action="store_true",
                   help="dynamic int8 weights (onnxruntime.quantization); the perplexity cost is printed")  # fmt: skip
    p.add_argument("--split", choices=["valid", "test"], default="test",
                   help="held-out text for the parity check (default test)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=80, help="streams of the parity check (default 80)")
    p.add_argument("--data-dir", default=None, help="folder holding the built-in dataset")
    p.add_argument("--corpus", default=None, metavar="DIR", help="a moved copy of the run's corpus")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="rrnn",
        description="Restricted recurrent networks: parameter counts, language-model "
        "training and evaluation, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"rrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_params_parser, _train_parser, _sweep_parser, _report_parser, _bench_parser,
                _eval_parser, _generate_parser, _export_parser):  # fmt: skip
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"rrnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # permissions, a full disk, a long name: not a traceback
        from .fileio import explain_os_error

        print(f"rrnn {args.command}: error: {explain_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rrnn {args.command}: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
