"""Training a language model: the paper's recipe (section IV-A) as defaults.

A run directory holds::

    config.json     the TrainConfig and ModelConfig of the run
    metrics.jsonl   one record per log interval ("kind": "log") and per epoch ("kind": "epoch")
    checkpoint.pt   latest state: model, optimizer, RNG, hidden state, position, history
    best.pt         the checkpoint of the best validation epoch so far
    summary.json    final numbers (written at the end, and updated after every epoch)

Checkpoints are written atomically after every epoch and when the run is
stopped with Ctrl-C (at the next batch boundary). ``--resume`` restarts from
``checkpoint.pt`` and reaches exactly the numbers of an uninterrupted run on
the same machine and thread count, also after ``kill -9``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..fileio import (
    atomic_write_text,
    copy_file,
    cpu_flags,
    load_json,
    machine,
    read_json,
    set_aside,
)
from ..kernels import tuning
from . import data as D
from . import methods
from .checkpoint import (  # noqa: F401  re-exported: rrnn.lm.train's names before lm.checkpoint
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointError,
    Progress,
    hidden_from_list,
    hidden_to_list,
    load_checkpoint,
    model_from_checkpoint,
)
from .config import (  # noqa: F401  re-exported: rrnn.lm.train's names before lm.config
    LOSSES,
    METHOD_OPTIONS,
    PRECISIONS,
    VARIANTS,
    ModelConfig,
    TrainConfig,
    _positive_int,
    _real,
    check_method_options,
)
from .distributed import Group
from .evaluation import evaluate, json_ppl, perplexity, split_perplexity  # noqa: F401
from .model import RNNModel, detach_hidden

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "summary.json")
# fields that may differ when resuming: where things are and how fast they run
# (--patience too: it decides only when a run stops, never what an epoch computes)
RESUMABLE_OVERRIDES = {
    "data_dir", "corpus", "device", "threads", "log_interval", "loss", "precision", "patience",
}  # fmt: skip
# a compared method that ends further than this from its budget says so
BUDGET_TOLERANCE = 0.02
# summary.json's status of a run that has nothing left to train
FINISHED = ("completed", "early-stopped")
# A window's loss above this many times log(V) (the loss of a uniform guess) is
# divergence, as is a non-finite loss or gradient norm. A fresh model starts
# below 1.5 log(V) (measured on PTB and WikiText-2, every cell, both variants).
DIVERGENCE_FACTOR = 3.0


class TrainingDiverged(RuntimeError):
    pass


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (x86: AVX-512 BF16 or AMX; ARM: BF16)."""
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & cpu_flags())


def default_threads() -> int:
    """torch's default thread count on an idle machine, fewer where other work
    already keeps cores busy (the 1-minute load average), so that a run does not
    oversubscribe a shared machine. At least 1; ``--threads`` overrides."""
    threads = torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        return threads
    return max(1, min(threads, int(cores - busy + 0.5)))


def early_stop_due(epoch: int, best_epoch: int | None, patience: int | None, epochs: int) -> bool:
    """Whether a run that has trained ``epoch`` epochs, its best validation at
    ``best_epoch``, stops now by patience (never after the schedule's last epoch:
    that run simply completed)."""
    if patience is None or epoch >= epochs:
        return False
    return epoch - (best_epoch or 0) >= patience


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Cosine annealing over the run, one value per epoch: ``base`` at epoch 0,
    falling to ``base * (1 + cos(pi * (E-1)/E)) / 2`` at the last."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _strict_json(obj) -> str:
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------------------
# Run directory
# ---------------------------------------------------------------------------
def _check_out(out: Path, resume: bool, overwrite: bool) -> list[str]:
    """Refuse an unusable ``out`` before anything is created; returns the run
    files to replace (``overwrite``)."""
    if resume and overwrite:
        raise ValueError(
            "--resume continues the run in --out and --overwrite replaces it; pass one of them"
        )
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a run directory")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    no_checkpoint = not (out / "checkpoint.pt").is_file()
    if resume:
        if no_checkpoint:
            started = f" ({', '.join(existing)}: a run stopped before its first checkpoint)"
            raise FileNotFoundError(
                f"--resume: no checkpoint.pt in {out}{started if existing else ''}; there is "
                "nothing to continue: "
                + ("start it again with --overwrite instead of --resume"
                   if existing else "start a new run without --resume")
            )  # fmt: skip
        return []
    if existing and not overwrite:
        if no_checkpoint:
            raise FileExistsError(
                f"{out} holds a run that stopped before its first checkpoint "
                f"({', '.join(existing)}, no checkpoint.pt): pass --overwrite to start it "
                "again, or choose another --out"
            )
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue "
            "it, --overwrite to replace it, or choose another --out"
        )
    return existing


def _create_out(out: Path, replace: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in replace:
        (out / name).unlink()


def _check_resume_config(stored: dict, requested: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The stored config wins; a flag given explicitly that contradicts it is an error."""
    conflicts = []
    stored = TrainConfig.from_dict(stored).to_dict()
    for name in sorted(explicit - RESUMABLE_OVERRIDES):
        if name in stored and getattr(requested, name) != stored[name]:
            conflicts.append(
                f"--{name.replace('_', '-')} {getattr(requested, name)!r} "
                f"(the run has {stored[name]!r})"
            )
    if conflicts:
        raise CheckpointError(
            "cannot resume with different settings: "
            + "; ".join(conflicts)
            + ". Drop these flags to continue the run, or start a new one with another --out."
        )
    merged = dict(stored)
    for name in explicit & RESUMABLE_OVERRIDES:
        if name == "corpus" and stored.get("corpus") is None:
            continue  # a built-in dataset run: --corpus cannot re-point it
        merged[name] = getattr(requested, name)
    return TrainConfig.from_dict(merged)


def check_prune_window(cfg: TrainConfig, corpus) -> None:
    """Pruning updates its masks every --prune-freq iterations between its start
    and end: a window shorter than that would update them once at most and miss
    the budget, so it is refused before anything is written (real iteration counts,
    from the corpus, the batch size and --max-batches)."""
    if cfg.compress != "prune":
        return
    windows = D.num_windows(D.batchify(corpus.train, cfg.batch_size), cfg.bptt)
    if cfg.max_batches:
        windows = min(windows, cfg.max_batches)
    sched = methods.Schedule(cfg, windows)
    if sched.end - sched.start < cfg.prune_freq:
        raise ValueError(
            f"--compress prune: pruning runs from iteration {sched.start} to {sched.end} of "
            f"{sched.total} ({windows} per epoch), fewer than --prune-freq {cfg.prune_freq} "
            "iterations, so the masks would change at most once; pass --prune-freq "
            f"{max(1, (sched.end - sched.start) // 10)} or less, a later --compress-end, or "
            "more --epochs"
        )


def _damaged_config(path: Path, log) -> bool:
    """On resume: True (after keeping a copy aside) where config.json is missing or
    damaged, so that it is written again from the checkpoint's settings."""
    doc, why = load_json(path)
    if isinstance(doc, dict) and isinstance(doc.get("train"), dict):
        return False
    if path.exists():
        set_aside(path, why or "not a run's settings", log)
    else:
        log(f"warning: {path} was missing; written again from the checkpoint")
    return True


class _StopFlag:
    """First Ctrl-C: finish the current batch, checkpoint, stop. Second: abort, but
    never in the middle of a checkpoint write (it is finished first, so the abort
    loses only the batches since the last checkpoint and exits 130)."""

    active: _StopFlag | None = None  # the flag of the training loop now running

    def __init__(self) -> None:
        self.stop = False
        self._old = None
        self._holding = False
        self._abort = False

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread
            self._old = None
        _StopFlag.active = self
        return self

    def _handle(self, signum, frame):
        if self.stop and self._holding:
            self._abort = True
            print("\nwriting the checkpoint; aborting once it is written", file=sys.stderr,
                  flush=True)  # fmt: skip
            return
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print(
            "\nstopping after this batch (Ctrl-C again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )

    @contextmanager
    def hold(self):
        """A second Ctrl-C inside waits for the end of the block."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._abort:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        _StopFlag.active = None
        return False


@contextmanager
def _uninterrupted():
    """Around a checkpoint write: a second Ctrl-C waits for its end."""
    flag = _StopFlag.active
    if flag is None:
        yield
    else:
        with flag.hold():
            yield


class _Metrics:
    """Appends JSON lines; on resume, drops records written after the checkpoint."""

    def __init__(self, path: Path, keep: int | None, writer: bool = True) -> None:
        self.path, self.writer = path, writer  # under torchrun, rank 0 alone writes
        lines: list[str] = []
        if keep is not None and path.is_file():
            lines = path.read_text().splitlines()[:keep]
            if writer:
                atomic_write_text(path, "".join(line + "\n" for line in lines))
        self.count = len(lines)

    def write(self, record: dict) -> None:
        if self.writer:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
        self.count += 1


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    explicit: set[str] | None = None,
    log=print,
    progress: bool | None = None,
) -> dict:
    """Train (or resume) a run in ``out``; returns the summary dict.

    ``explicit``: names of config fields the user set on the command line (used
    to refuse contradicting a resumed run's settings). Every setting is checked
    before ``out`` is created. Raises ``TrainingDiverged`` (after writing the
    summary with status "diverged") when the loss or gradient blows up.
    """
    group = Group(cfg.device)
    try:
        run = _open_run(cfg, Path(out), resume, overwrite, explicit or set(), log, group)
        show_bar = (sys.stderr.isatty() if progress is None else progress) and group.main
        if run.early_stopped():
            run.log(
                f"{out} stopped by patience after epoch {run.state.epoch} (best validation "
                f"at epoch {run.state.best['epoch']}, patience {run.cfg.patience}); "
                "nothing to resume. A larger --patience continues it"
            )
            # a kill between the checkpoint and summary.json leaves the file one epoch behind
            stored = read_json(Path(out) / "summary.json")
            stale = not isinstance(stored, dict) or stored.get("status") != "early-stopped"
            return run.summary("early-stopped", write=stale)
        with _StopFlag() as flag:
            for epoch in range(run.state.epoch, run.cfg.epochs):
                if run.train_epoch(epoch, flag, show_bar) == "interrupted":
                    return run.summary("interrupted")
                run.end_epoch(epoch)
                if run.early_stopped():
                    run.log(
                        f"early stop after epoch {epoch + 1} of {run.cfg.epochs}: no better "
                        f"validation perplexity for {run.cfg.patience} epochs (best at epoch "
                        f"{run.state.best['epoch']}); the schedule's lr was kept throughout"
                    )
                    run.log_budget()
                    return run.summary("early-stopped", write=False)  # end_epoch wrote it
                if epoch + 1 == run.cfg.epochs:
                    run.log_budget()
                if flag.stop and epoch + 1 < run.cfg.epochs:
                    run.log(
                        f"stopped after epoch {epoch + 1}; continue with: "
                        f"rrnn train --out {out} --resume"
                    )
                    return run.summary("interrupted")
        return run.summary("completed")
    finally:
        group.close()


class _RunRecord:
    """What a run leaves on disk: its checkpoint (every rank's state, written by
    rank 0) and summary.json; a compared method's budget check. Part of :class:`_Run`."""

    def checkpoint(self, epoch: int, batch: int, hidden) -> None:
        """Rank 0 writes the whole state (the hidden state of every rank's columns)."""
        if hidden is not None:
            hidden = [self.group.gather_columns(h) for h in hidden_to_list(hidden)]
        if not self.group.main:
            return
        with _uninterrupted():
            self._save(epoch, batch, hidden)

    def _save(self, epoch: int, batch: int, hidden) -> None:
        Checkpoint(
            train_config=self.cfg.to_dict(),
            model_config=self.mconf.to_dict(),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            rng=torch.get_rng_state(),
            progress=replace(self.state, epoch=epoch, batch=batch, hidden=None),
            hidden=None if hidden is None else [h.cpu() for h in hidden],
            metrics_lines=self.metrics.count,
            itos=self.corpus.itos,
            fingerprint=self.corpus.fingerprint,
            threads=self.threads,
            compress=self.method.state_dict(),
            dispatch=tuning.snapshot(),  # the kernel paths this run measured: a resume takes them
        ).save(self.out / "checkpoint.pt")

    def log_budget(self) -> None:
        note = self._budget().get("budget_note")
        if note:
            self.log(f"warning: {note}")

    def _budget(self, ended: bool = True) -> dict:
        """A compared method's budget and how far the model is from it; more than
        BUDGET_TOLERANCE off at the end is said in the summary (and logged). A run
        still training has no note: gradual pruning and ISS reach their budget only
        at the end of their ramp, and the full model is not off budget before it."""
        if self.cfg.compress == "restrict":
            return {}
        budget, stored = self.cfg.budget(), self.method.counts()["rnn_params"]
        off = stored / budget - 1.0
        note = None
        if ended and abs(off) > BUDGET_TOLERANCE:
            note = (f"{self.cfg.compress} stores {stored:,} recurrent parameters, {off:+.1%} "
                    f"off its budget of {budget:,}")  # fmt: skip
        return {"budget": budget, "budget_off": off, "budget_note": note}

    def summary(self, status: str, write: bool = True, reason: str | None = None) -> dict:
        """The run's numbers; written to summary.json unless ``write`` is False
        (a no-op resume leaves the file as the run left it)."""
        state, best = self.state, self.state.best
        record = state.best_record()
        tokens = sum(h["train_tokens"] for h in state.history)
        result = {
            "status": status,
            "test_ppl": record["test_ppl"] if record else None,
            "valid_ppl": record["valid_ppl"] if record else None,
            "best_epoch": best["epoch"] if best else None,
            "epochs": len(state.history),
            "epochs_planned": self.cfg.epochs,
            "patience": self.cfg.patience,
            "stopped_epoch": state.epoch if status == "early-stopped" else None,
            "stop_reason": reason or _stop_reason(status, state, self.cfg),
            "rnn_params": self.rnn_params,
            "total_params": self.total_params,
            "compress": self.cfg.compress,
            **self.method.counts(),
            **self._budget(ended=status in FINISHED),
            "train_seconds": round(state.elapsed, 3),
            "train_tokens_per_s": tokens / max(state.elapsed, 1e-9) if tokens else None,
            "dataset": self.corpus.name if self.cfg.corpus is None else None,
            "corpus": self.cfg.corpus,
            "fingerprint": self.corpus.fingerprint,
            "model": self.mconf.to_dict(),
            "machine": dict(
                machine(),
                threads=self.threads,
                processes=self.group.world,
                device=str(next(self.model.parameters()).device),
            ),
            "history": state.history,
        }
        if write and self.group.main:
            atomic_write_text(self.out / "summary.json", _strict_json(result))
        return result


class _Run(_RunRecord):
    """One training run: its model, optimizer, data, run directory and progress,
    and the loop of one epoch (what it writes: :class:`_RunRecord`)."""

    def __init__(self, cfg, out, corpus, model, optimizer, state, ckpt, threads, log, group):
        self.cfg, self.out, self.corpus, self.group = cfg, out, corpus, group
        self.log = log if group.main else (lambda message: None)
        self.model, self.optimizer, self.state, self.threads = model, optimizer, state, threads
        self.net = group.wrap(model)  # DistributedDataParallel under torchrun
        self.mconf = model.config
        device = next(model.parameters()).device
        lines = ckpt.metrics_lines if ckpt else None
        self.metrics = _Metrics(out / "metrics.jsonl", lines, group.main)
        cols = group.columns(cfg.batch_size)
        self.train_data = D.batchify(corpus.train, cfg.batch_size)[:, cols].to(device)  # (N/B, B/W)
        self.eval_data = {
            s: D.batchify(corpus.split(s), cfg.eval_batch_size).to(device)
            for s in ("valid", "test")
        }
        self.windows = D.num_windows(self.train_data, cfg.bptt)
        if cfg.max_batches:
            self.windows = min(self.windows, cfg.max_batches)
        self.max_loss = DIVERGENCE_FACTOR * math.log(corpus.vocab_size)
        self.rnn_params, self.total_params = model.rnn_parameters(), model.total_parameters()
        self.method = methods.build(cfg, model, self.windows)  # pruning, ISS: their state
        if ckpt is not None and ckpt.compress:
            self.method.load_state_dict(ckpt.compress)



    def early_stopped(self) -> bool:
        """Patience counts only epochs at the model's final size (after pruning)."""
        best = self.state.best
        return self.method.at_final_size() and early_stop_due(
            self.state.epoch, best and best["epoch"], self.cfg.patience, self.cfg.epochs
        )

    # --- one epoch -----------------------------------------------------------
    def _diverged(self, why: str, epoch: int, batch: int, lr: float) -> TrainingDiverged:
        self.summary("diverged", reason=f"diverged: {why} at epoch {epoch + 1}, batch {batch + 1}")
        ckpt = self.out / "checkpoint.pt"
        where = (
            f"The last good checkpoint ({ckpt}, after epoch {self.state.epoch}) is intact. "
            if ckpt.is_file()
            else "It diverged before its first checkpoint, so there is none to go back to. "
        )
        clip = self.cfg.clip
        fix = (f"Lower --lr (or --clip, now {clip:g})" if clip and clip > 0
               else "Lower --lr, set --clip (> 0)")  # fmt: skip
        return TrainingDiverged(
            f"training diverged: {why} at epoch {epoch + 1}, batch {batch + 1} (lr {lr:.4g}). "
            f"{where}{fix} and start again."
        )

    def train_epoch(self, epoch: int, flag: _StopFlag, show_bar: bool) -> str:
        """Train the windows of one epoch (from the saved position when resuming).
        Returns "interrupted" after a Ctrl-C checkpoint, else "done"."""
        from tqdm import tqdm

        cfg, model, state = self.cfg, self.model, self.state
        lr = cosine_lr(cfg.lr, epoch, cfg.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        model.train()
        local_batch = self.train_data.size(1)
        hidden = state.hidden if state.hidden is not None else model.init_hidden(local_batch)
        state.hidden = None
        bar = tqdm(total=self.windows, initial=state.batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not show_bar, file=sys.stderr, dynamic_ncols=True, leave=False)  # fmt: skip
        interval = [0.0, 0, time.perf_counter()]  # loss sum, tokens, start
        max_norm = cfg.clip if cfg.clip > 0 else float("inf")
        for batch in range(state.batch, self.windows):
            data, targets = D.get_batch(self.train_data, batch * cfg.bptt, cfg.bptt)
            hidden = detach_hidden(hidden)
            self.optimizer.zero_grad(set_to_none=True)
            if cfg.loss == "fused":  # decoder + cross-entropy in chunks (rrnn.lm.loss)
                loss, hidden = self.net(data, hidden, targets=targets, precision=cfg.precision)
            else:
                logits, hidden = self.net(data, hidden)
                loss = F.cross_entropy(logits, targets)
            # the global batch's loss, and one decision to stop, on every rank
            value, stop = self.group.mean_and_any(loss.item(), flag.stop)
            if not math.isfinite(value) or value > self.max_loss:
                raise self._diverged(
                    f"the loss is {value:.4g} (limit {DIVERGENCE_FACTOR:g} log V = "
                    f"{self.max_loss:.3g})", epoch, batch, lr,
                )  # fmt: skip
            penalty = self.method.penalty()  # ISS: the group Lasso term (not in the reported loss)
            (loss if penalty is None else loss + penalty).backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            if not torch.isfinite(norm):
                raise self._diverged(f"the gradient norm is {norm.item()}", epoch, batch, lr)
            self.optimizer.step()
            self.method.after_step()  # pruning masks, ISS zeroing
            n_tok = targets.numel() * self.group.world
            state.loss_sum += value * n_tok
            state.tokens += n_tok
            interval[0] += value * n_tok
            interval[1] += n_tok
            bar.update(1)
            if (batch + 1) % cfg.log_interval == 0 or batch + 1 == self.windows:
                self._log_interval(epoch, batch, lr, interval, bar, show_bar)
                interval = [0.0, 0, time.perf_counter()]
            if stop and batch + 1 < self.windows:
                state.elapsed += time.perf_counter() - interval[2]
                self.checkpoint(epoch, batch + 1, hidden)
                bar.close()
                self.log(
                    f"stopped at epoch {epoch + 1}, batch {batch + 1}; checkpoint written. "
                    f"Continue with: rrnn train --out {self.out} --resume"
                )
                return "interrupted"
        bar.close()
        return "done"

    def _log_interval(self, epoch, batch, lr, interval, bar, show_bar) -> None:
        loss_sum, tokens, tick = interval
        dt = time.perf_counter() - tick
        self.state.elapsed += dt
        rate = tokens / max(dt, 1e-9)
        mean = loss_sum / tokens
        eta = (self.windows - batch - 1) * self.cfg.bptt * self.cfg.batch_size / max(rate, 1e-9)
        self.metrics.write({
            "kind": "log", "epoch": epoch + 1, "batch": batch + 1, "batches": self.windows,
            "loss": mean, "ppl": json_ppl(mean), "lr": lr, "tokens_per_s": rate,
            "elapsed": self.state.elapsed,
        })  # fmt: skip
        bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{perplexity(mean):.1f}", tok_s=f"{rate:,.0f}")
        if not show_bar:
            self.log(
                f"epoch {epoch + 1} batch {batch + 1}/{self.windows} loss {mean:.3f} "
                f"ppl {perplexity(mean):.1f} lr {lr:.4g} {rate:,.0f} tok/s eta {eta:.0f}s"
            )

    def end_epoch(self, epoch: int) -> None:
        """Evaluate, record, checkpoint; a non-finite validation loss is divergence."""
        cfg, state = self.cfg, self.state
        lr = cosine_lr(cfg.lr, epoch, cfg.epochs)
        train_loss = state.loss_sum / max(state.tokens, 1)
        losses = {}
        for split in ("valid", "test"):
            total, count = evaluate(self.model, self.eval_data[split], cfg.bptt, cfg.max_batches)
            losses[split] = total / count
        if not math.isfinite(losses["valid"]):
            raise self._diverged(
                f"the validation loss is {losses['valid']}", epoch, self.windows - 1, lr
            )
        record = {
            "kind": "epoch", "epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
            "train_ppl": json_ppl(train_loss), "valid_loss": losses["valid"],
            "valid_ppl": json_ppl(losses["valid"]), "test_loss": losses["test"],
            "test_ppl": json_ppl(losses["test"]), "train_tokens": state.tokens,
            "elapsed": state.elapsed,
        }  # fmt: skip
        sized = self.method.at_final_size()
        if not sized:
            record["at_final_size"] = False  # pruning or the ISS cut still to come
        state.history.append(record)
        best = state.best
        improved = (
            sized
            and record["valid_ppl"] is not None
            and (best is None or record["valid_ppl"] < best["valid_ppl"])
        )
        if improved:
            state.best = {"epoch": epoch + 1, "valid_ppl": record["valid_ppl"]}
        self.metrics.write(record)
        state.loss_sum, state.tokens, state.batch = 0.0, 0, 0
        state.epoch = epoch + 1
        self.checkpoint(epoch + 1, 0, None)
        if improved and self.group.main:
            with _uninterrupted():
                copy_file(self.out / "checkpoint.pt", self.out / "best.pt")
        done = "early-stopped" if self.early_stopped() else "completed"
        self.summary("running" if epoch + 1 < cfg.epochs and done == "completed" else done)
        self.log(
            f"epoch {epoch + 1:3d} | lr {lr:.4f} | train ppl {perplexity(train_loss):8.2f} | "
            f"valid ppl {perplexity(losses['valid']):8.2f} | test ppl "
            f"{perplexity(losses['test']):8.2f} | {state.elapsed:.0f}s"
            + ("  *best" if improved else "")
        )


def _open_run(cfg, out: Path, resume, overwrite, explicit, log, group: Group) -> _Run:
    """Check everything, then create (or reopen) the run directory (rank 0)."""
    replace = _check_out(out, resume, overwrite)
    group.barrier()  # every rank has looked at `out` before rank 0 writes to it
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out / "checkpoint.pt")
        cfg = _check_resume_config(ckpt.train_config, cfg, explicit)
    device, threads = _claim_device(cfg, group, ckpt)
    corpus = _load_corpus(cfg, out, ckpt, log)
    D.check_batching(corpus, cfg.batch_size, cfg.bptt, ("train",), "--batch-size")
    D.check_batching(corpus, cfg.eval_batch_size, 1, ("valid", "test"), "--eval-batch-size")
    check_prune_window(cfg, corpus)
    torch.manual_seed(cfg.seed)
    mconf = cfg.model_config(corpus.vocab_size)
    model = RNNModel(mconf)
    model.initialize(cfg.init)
    model = model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    state = Progress() if ckpt is None else ckpt.progress  # where the run goes on from
    if ckpt is not None:
        _restore(ckpt, out, corpus, mconf, model, optimizer, state, cfg, group, log)
    if group.main:
        _create_out(out, replace)
        if ckpt is None or _damaged_config(out / "config.json", log):
            atomic_write_text(
                out / "config.json",
                _strict_json({"train": cfg.to_dict(), "model": mconf.to_dict()}),
            )
    group.barrier()
    run = _Run(cfg, out, corpus, model, optimizer, state, ckpt, threads, log, group)
    if state.epoch == 0 and state.batch == 0:
        _announce(run)
    return run


def _claim_device(cfg, group: Group, ckpt) -> tuple[torch.device, int]:
    """The run's device and thread count, checked before anything is written."""
    device = group.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch.cuda.is_available() is False")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    group.columns(cfg.batch_size)  # divisible, before anything is written
    # the thread count of a run stays what it was, so that a resumed run is exact;
    # under torchrun the processes of a machine divide the default between them
    threads = (
        cfg.threads
        or (ckpt.threads if ckpt else None)
        or max(1, default_threads() // group.local_world)
    )
    torch.set_num_threads(threads)
    if cfg.precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise ValueError(
            "--precision bf16: this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16 "
            "or ARM bf16), so bfloat16 GEMMs would run slower than float32; train with "
            "--precision fp32 (the default)"
        )
    return device, threads


def _load_corpus(cfg, out: Path, ckpt, log) -> D.Corpus:
    """The run's corpus; a resumed run whose data moved is told how to point at it."""
    try:
        return D.load_corpus(cfg.dataset, cfg.corpus, cfg.data_dir, log=log)
    except D.DataError as err:
        if ckpt is None:
            raise
        where, flag = ((f"the corpus in {cfg.corpus}", "--corpus DIR") if cfg.corpus
                       else (f"the dataset {cfg.dataset}", "--data-dir DIR"))  # fmt: skip
        raise D.DataError(
            f"{err}. {out} was trained on {where}; pass {flag} with --resume to point "
            "at a copy"
        ) from None


def _announce(run: _Run) -> None:
    """The first lines of a new run's log: data, model, threads, compression."""
    corpus, cfg, mconf, threads = run.corpus, run.cfg, run.mconf, run.threads
    run.log(
        f"{corpus.name}: vocab {corpus.vocab_size:,}, train {corpus.train.numel():,} "
        f"tokens; {mconf.cell} r={mconf.sharing_rate} {mconf.layers}x"
        f"{mconf.hidden_size}: {run.rnn_params:,} recurrent / {run.total_params:,} "
        f"total parameters; {threads} thread{'s' if threads > 1 else ''}"
        + (f" x {run.group.world} processes" if run.group.world > 1 else "")
    )
    if cfg.compress != "restrict":
        run.log(f"compression: {run.method.describe()}")
    if cfg.compress in ("prune", "iss") and run.method.schedule.adjusted:
        run.log(f"the run is shorter than --compress-start: starting at iteration "
                f"{run.method.schedule.start} of {run.method.schedule.total}")  # fmt: skip


def _restore(ckpt, out, corpus, mconf, model, optimizer, state, cfg, group, log) -> None:
    if ckpt.fingerprint != corpus.fingerprint:
        raise CheckpointError(
            f"{out / 'checkpoint.pt'} was trained on other data (fingerprint "
            f"{str(ckpt.fingerprint)[:12]}..., this corpus {corpus.fingerprint[:12]}...)"
        )
    if ckpt.model_config != mconf.to_dict():
        raise CheckpointError(
            f"{out / 'checkpoint.pt'} holds another model: {ckpt.model_config} "
            f"!= {mconf.to_dict()}"
        )
    model.load_state_dict(ckpt.model)
    optimizer.load_state_dict(ckpt.optimizer)
    tuning.preload(ckpt.dispatch)
    torch.set_rng_state(ckpt.rng)
    if ckpt.hidden is not None:  # (L, B, H): this rank's columns
        device = next(model.parameters()).device
        cols = group.columns(cfg.batch_size)
        hidden = [h[:, cols].to(device) for h in ckpt.hidden]
        state.hidden = hidden_from_list(hidden, cfg.cell)
    if group.main:
        log(f"resuming {out} at epoch {state.epoch + 1}, batch {state.batch}")


def _stop_reason(status: str, state: Progress, cfg: TrainConfig) -> str | None:
    """Why a run is where it is, in words the report prints."""
    if status == "early-stopped":
        return (
            f"patience {cfg.patience}: no better validation perplexity after epoch "
            f"{state.best['epoch']}"
        )
    if status == "completed":
        return f"the schedule's {cfg.epochs} epochs"
    return None


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A few batches of every split: one epoch, three windows each."""
    d = cfg.to_dict()
    d.update(epochs=1, max_batches=3, log_interval=1)
    if d["compress"] == "prune":  # three windows: masks may change at every one
        d["prune_freq"] = 1
    return TrainConfig.from_dict(d)


def temp_run_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="rrnn-dry-run-"))
