"""Sweeps: a grid of ``rrnn train`` runs in one folder, finished runs skipped,
stopped ones resumed, missing ones started.

::

    DIR/
      sweep.json                                   every grid asked for in DIR
      ptb-lstm-r0.5-tied-dropout-lr1-authors-seed1/  one `rrnn train` run directory
        config.json  metrics.jsonl  summary.json  checkpoint.pt  best.pt
        train.log                                  what the run printed
        .lock                                      held while a process trains it

A grid is the product of the axes (``--cells lstm,gru --sharing-rates 0,0.5``);
``--grid "cells=gru sharing-rates=0,0.5"`` (repeatable) gives several products
in one sweep, each taking the axis flags for the axes it does not name. Every
other setting is common to all runs. The run directory's name is made from the
axes, so a second invocation finds its runs again; one whose stored settings
differ from the ones asked for is reported as a conflict and left alone.

Each run trains in its own process (``python -m rrnn.experiments.worker``), so a
run that crashes or diverges leaves the others running, and its thread count
is its own. Launchers: a local pool of ``jobs`` processes, or Ray tasks.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import atomic_write_text, load_json, read_json, set_aside
from ..lm.config import AXES
from ..lm.train import (
    FINISHED,
    RESUMABLE_OVERRIDES,
    TrainConfig,
    check_prune_window,
    early_stop_due,
)

# sweep axis -> TrainConfig field, in the order they make up a run's name
_AXIS_TYPES: dict[str, Callable] = {"sharing_rates": float, "lrs": float, "seeds": int}
SWEEP_FILE = "sweep.json"
LOG_FILE = "train.log"
LOCK_FILE = ".lock"


class SweepError(ValueError):
    """A grid that cannot be built or run; the message says what to change."""


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------
def parse_list(axis: str, text: str) -> list:
    """``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]`` with the axis' type."""
    convert = _AXIS_TYPES.get(axis, str)
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values:
        raise SweepError(f"--{axis.replace('_', '-')} needs at least one value")
    try:
        return [convert(v) for v in values]
    except ValueError:
        raise SweepError(
            f"--{axis.replace('_', '-')}: {text!r} is not a comma-separated list of "
            f"{convert.__name__} values"
        ) from None


def parse_grid(text: str) -> dict[str, list]:
    """``"cells=lstm sharing-rates=0,0.5"`` -> ``{"cells": ["lstm"], "sharing_rates": [0.0, 0.5]}``."""
    grid: dict[str, list] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        axis = key.strip().replace("-", "_")
        if not sep or axis not in AXES:
            raise SweepError(
                f"--grid {text!r}: {item!r} is not AXIS=VALUES with AXIS one of "
                f"{', '.join(a.replace('_', '-') for a in AXES)}"
            )
        grid[axis] = parse_list(axis, value)
    if not grid:
        raise SweepError("--grid needs at least one AXIS=VALUES item")
    return grid


def run_name(cfg: TrainConfig) -> str:
    """The run directory's name: every axis of the configuration."""
    data = cfg.dataset if cfg.corpus is None else f"corpus-{Path(cfg.corpus).name}"
    method = "" if cfg.compress == "restrict" else f"-{cfg.compress}"
    if cfg.compress == "prune" and cfg.prune_schedule != "narang":
        method += f"-{cfg.prune_schedule}"
    return (
        f"{data}-{cfg.cell}-r{cfg.sharing_rate:g}-{cfg.variant}-lr{cfg.lr:g}-"
        f"{cfg.init}-seed{cfg.seed}{method}"
    )


@dataclass
class Run:
    name: str
    config: dict  # TrainConfig.to_dict()
    state: str = "new"  # new | resume | done | diverged | conflict | busy
    detail: str = ""


def expand(base: dict, axes: dict[str, list], grids: list[dict] | None = None) -> list[Run]:
    """The runs of a sweep, in grid order, without duplicates.

    ``base``: TrainConfig fields common to every run; ``axes``: axis -> values
    (the default for an axis a grid does not name); ``grids``: products to take
    the union of (none: the single product of ``axes``).
    """
    runs: dict[str, Run] = {}
    for grid in grids or [{}]:
        values = {axis: grid.get(axis, axes.get(axis)) for axis in AXES}
        names = [axis for axis in AXES if values[axis] is not None]
        for combo in itertools.product(*(values[a] for a in names)):
            fields_ = dict(base)
            fields_.update({AXES[a]: v for a, v in zip(names, combo)})
            if fields_.get("corpus") is not None:
                fields_["dataset"] = None
            try:
                cfg = TrainConfig(**fields_)
                cfg.model_config(vocab_size=2)  # checks the cell, sharing rate and sizes now
            except (TypeError, ValueError) as err:
                raise SweepError(f"invalid run in the grid ({err})") from None
            runs.setdefault(run_name(cfg), Run(run_name(cfg), cfg.to_dict()))
    return list(runs.values())


def check_data(runs: list[Run], log=print) -> None:
    """Before any run starts: every dataset is known and present (downloaded once
    here where missing, not by each worker) and every corpus folder complete;
    otherwise a DataError naming the problem."""
    from ..lm import data as D

    seen = set()
    for run in runs:
        cfg = run.config
        key = (cfg.get("dataset"), cfg.get("corpus"), cfg.get("data_dir"))
        if key in seen:
            continue
        seen.add(key)
        dataset, corpus, root = key
        if corpus is not None:
            D.corpus_files(Path(corpus))
        else:
            D.ensure_dataset(D.builtin(dataset), D.data_dir(root), progress=False, log=log)
    corpora: dict[tuple, object] = {}
    for run in runs:  # pruning's window in real iterations needs the corpus's size
        if run.config.get("compress") == "prune":
            cfg = TrainConfig.from_dict(run.config)
            key = (cfg.dataset, cfg.corpus, cfg.data_dir)
            if key not in corpora:
                corpora[key] = D.load_corpus(*key, log=lambda m: None)
            try:
                check_prune_window(cfg, corpora[key])
            except ValueError as err:
                raise SweepError(f"{run.name}: {err}") from None


# ---------------------------------------------------------------------------
# What a run directory holds
# ---------------------------------------------------------------------------
def inspect(run: Run, run_dir: Path) -> Run:
    """Set ``run.state`` from what ``run_dir`` holds."""
    stored = read_json(run_dir / "config.json")
    if stored is not None:
        old = TrainConfig.from_dict(stored.get("train", {})).to_dict()
        diff = [
            f"{k}={old.get(k)!r} (asked {v!r})"
            for k, v in run.config.items()
            if k not in RESUMABLE_OVERRIDES and old.get(k) != v
        ]
        if diff:
            run.state, run.detail = "conflict", "holds other settings: " + ", ".join(diff)
            return run
    summary = read_json(run_dir / "summary.json") or {}
    status = summary.get("status")
    if status == "completed" or (status == "early-stopped" and _still_stopped(summary, run)):
        run.state = "done"
    elif summary.get("status") == "diverged":
        run.state, run.detail = "diverged", "stopped: training diverged (see train.log)"
    elif (run_dir / "checkpoint.pt").is_file():
        run.state = "resume"
    else:
        run.state = "new"
    return run


def _still_stopped(summary: dict, run: Run) -> bool:
    """An early-stopped run stays done unless the sweep asks for more patience
    (or none: every epoch), which continues it where it stopped."""
    try:
        epoch, best = int(summary["stopped_epoch"]), int(summary["best_epoch"])
    except (KeyError, TypeError, ValueError):
        return False  # an unreadable summary: the checkpoint decides on resume
    cfg = run.config
    return early_stop_due(epoch, best, cfg.get("patience"), cfg["epochs"])


def progress(run_dir: Path, epochs: int) -> tuple[float, str]:
    """(epochs done as a float, "epoch e/E batch b/n") from the tail of metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0.0, "starting"
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") == "epoch":
            return float(rec["epoch"]), f"epoch {rec['epoch']}/{epochs} done"
        if rec.get("kind") == "log":
            done = rec["epoch"] - 1 + rec["batch"] / max(rec["batches"], 1)
            return done, f"epoch {rec['epoch']}/{epochs} batch {rec['batch']}/{rec['batches']}"
    return 0.0, "starting"


def record_grid(out: Path, request: dict, runs: list[Run], log=print) -> None:
    """Append this invocation's grid to ``sweep.json`` (atomically). A file that
    does not parse, or is not this version's record, is kept aside, not replaced."""
    path = out / SWEEP_FILE
    doc, why = load_json(path)
    if doc is not None and not (
        isinstance(doc, dict)
        and doc.get("format") == "rrnn-sweep"
        and doc.get("version") == 1
        and isinstance(doc.get("grids"), list)
    ):
        why = "not a version-1 rrnn sweep record"
    if why:
        set_aside(path, why, log)
        doc = None
    doc = doc or {"format": "rrnn-sweep", "version": 1, "grids": []}
    entry = dict(request, runs=[r.name for r in runs])
    if entry not in doc["grids"]:
        doc["grids"].append(entry)
    atomic_write_text(out / SWEEP_FILE, json.dumps(doc, indent=2) + "\n")


# ---------------------------------------------------------------------------
# Starting one run
# ---------------------------------------------------------------------------
def _lock(run_dir: Path):
    """An exclusive lock on the run directory, or None if another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LOCK_FILE, "a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def _holder(run_dir: Path) -> str:
    """Who holds a run's lock, in words: the worker's process id, as its sweep wrote
    it into the lock file, and whether that process is still alive."""
    try:
        pid = int((run_dir / LOCK_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return "another process is training it"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "another process is training it"
    except PermissionError:
        pass
    return (
        f"another process is training it (worker pid {pid}; if its sweep was killed, "
        f"stop it with `kill -INT {pid}`: it checkpoints, then run the sweep again)"
    )


def start_worker(run: Run, run_dir: Path, threads: int | None, lock) -> subprocess.Popen:
    """Train ``run`` in its own process; output appended to ``run_dir/train.log``.

    The process gets its own session, so a terminal's Ctrl-C reaches only the
    sweep, which forwards one SIGINT (the run checkpoints and stops) per Ctrl-C.
    It inherits the lock, which so stays held while it lives.
    """
    config = dict(run.config)
    if threads:
        config["threads"] = threads
    log = open(run_dir / LOG_FILE, "a")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rrnn.experiments.worker", str(run_dir), json.dumps(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(lock.fileno(),),
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    finally:
        log.close()
    lock.truncate(0)  # the worker's pid, for a later sweep that finds the lock held
    lock.write(f"{proc.pid}\n")
    lock.flush()
    return proc


def run_blocking(run_dir: str, config: dict, threads: int | None) -> tuple[str, int]:
    """Train one run to its end in a child process and return ``(name, exit code)``;
    used by launchers that schedule runs themselves (Ray)."""
    run = inspect(Run(Path(run_dir).name, config), Path(run_dir))
    if run.state in ("done", "diverged", "conflict"):
        return run.name, 0 if run.state == "done" else 3
    lock = _lock(Path(run_dir))
    if lock is None:
        return run.name, 75  # EX_TEMPFAIL: another process trains it
    try:
        proc = start_worker(run, Path(run_dir), threads, lock)
        try:
            return run.name, proc.wait()
        except BaseException:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
    finally:
        lock.close()


# ---------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------
@dataclass
class Sweep:
    out: Path
    runs: list[Run]
    jobs: int = 1
    threads: int | None = None
    log: Callable[[str], None] = print
    show_bar: bool | None = None
    log_every: float = 60.0
    results: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise SweepError(f"--jobs must be a positive integer, got {self.jobs}")
        for run in self.runs:
            inspect(run, self.out / run.name)

    # --- reporting -------------------------------------------------------
    def plan(self) -> str:
        lines = [f"{len(self.runs)} runs in {self.out}:"]
        for run in self.runs:
            lines.append(
                f"  {run.state:9s} {run.name}" + (f"  ({run.detail})" if run.detail else "")
            )
        return "\n".join(lines)

    def todo(self) -> list[Run]:
        return [r for r in self.runs if r.state in ("new", "resume")]

    # --- local launcher --------------------------------------------------
    def run_local(self) -> dict[str, str]:
        """Run the pending runs on ``jobs`` local processes; returns name -> outcome."""
        pending = self.todo()
        if not pending:
            self.log(f"nothing to do: all {len(self.runs)} runs are finished or blocked")
            return self.results
        threads = self.threads or max(1, (os.cpu_count() or 1) // self.jobs)
        running: dict[str, tuple[Run, subprocess.Popen, object]] = {}
        stops = 0
        view = _View(self, pending)

        def on_signal(signum, frame):
            nonlocal stops
            stops += 1
            for _, proc, _ in running.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            view.say(
                "stopping: each running run checkpoints after its current batch"
                if stops == 1
                else "aborting the running runs without saving"
            )

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while (pending and not stops) or running:
                while pending and len(running) < self.jobs and not stops:
                    run = pending.pop(0)
                    lock = _lock(self.out / run.name)
                    if lock is None:
                        run.state, run.detail = "busy", _holder(self.out / run.name)
                        self.results[run.name] = "busy"
                        view.say(f"skip {run.name}: {run.detail}")
                        continue
                    proc = start_worker(run, self.out / run.name, threads, lock)
                    running[run.name] = (run, proc, lock)
                    view.started(run, "resume" if run.state == "resume" else "start", threads)
                time.sleep(1.0)
                for name in list(running):
                    run, proc, lock = running[name]
                    code = proc.poll()
                    if code is not None:
                        lock.close()
                        del running[name]
                        self.results[name] = self._outcome(run, code)
                        view.finished(run, self.results[name])
                view.update([r for r, _, _ in running.values()], len(pending))
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            view.close()
        unfinished = len(pending) + sum(v == "interrupted" for v in self.results.values())
        if unfinished:
            self.log(
                f"sweep stopped with {unfinished} runs unfinished; run the same command "
                "again to continue"
            )
        return self.results

    def _outcome(self, run: Run, code: int) -> str:
        summary = read_json(self.out / run.name / "summary.json") or {}
        status = summary.get("status")
        # finished; a Ctrl-C that arrives as the worker exits gives 130 or -SIGINT
        if status in FINISHED and code in (0, 130, -signal.SIGINT):
            return status
        if status == "diverged" or code == 3:
            return "diverged"
        if code == 130 or status == "interrupted":
            return "interrupted"
        return f"failed({code})"

    # --- Ray launcher ----------------------------------------------------
    def run_ray(self, address: str | None = None) -> dict[str, str]:
        """Each pending run as a Ray task (run directories on a filesystem every
        node sees); the same skip/resume rules as the local launcher."""
        try:
            import ray
        except ImportError:
            raise SweepError(
                '--launcher ray needs Ray: pip install "rrnn[ray]" (or pip install ray)'
            ) from None
        pending = self.todo()
        if not pending:
            self.log(f"nothing to do: all {len(self.runs)} runs are finished or blocked")
            return self.results
        started_here = not ray.is_initialized()
        if started_here:
            if address in (None, "local"):
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            else:
                _reachable(address)
                ray.init(address=address, log_to_driver=False)
        threads = self.threads or 1
        task = ray.remote(num_cpus=threads, max_retries=0)(run_blocking)
        refs = {
            task.remote(str((self.out / r.name).resolve()), r.config, threads): r for r in pending
        }
        for run in pending:
            self.log(f"submitted {run.name} ({threads} threads per task)")
        try:
            waiting = list(refs)
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                for ref in ready:
                    run = refs[ref]
                    _, code = ray.get(ref)
                    self.results[run.name] = "busy" if code == 75 else self._outcome(run, code)
                    self.log(f"{self.results[run.name]:11s} {run.name}")
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref)  # KeyboardInterrupt in the task: the run checkpoints and stops
            self.log("stopped; run the same command again to continue")
        finally:
            if started_here:
                ray.shutdown()
        return self.results


RAY_CONNECT_TIMEOUT = 15.0  # seconds; Ray's own client retries far longer, silently


def _reachable(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """A Ray address given as host:port (or ray://host:port) must accept a TCP
    connection within ``timeout`` seconds; 'auto' is left to Ray."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise SweepError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise SweepError(
            f"--ray-address {address}: no Ray cluster answered within {timeout:g} s ({err}); "
            "check the address (`ray status` on the head node), or leave --ray-address out "
            "to start Ray on this machine"
        ) from None


class _View:
    """Progress of a local sweep. On a terminal: one bar for the whole sweep (in
    epochs, with an ETA) and one per running run; otherwise a log line per event
    and every ``log_every`` seconds, with the rate and the ETA."""

    def __init__(self, sweep: Sweep, pending: list[Run]) -> None:
        self.sweep, self.out = sweep, sweep.out
        self.epochs = {r.name: r.config["epochs"] for r in pending}
        self.total = float(sum(self.epochs.values()))
        self.base = self._each()  # where each run stood when the sweep started
        self.done0 = sum(self.base.values())
        self.start = self.last = time.monotonic()
        show = sys.stderr.isatty() if sweep.show_bar is None else sweep.show_bar
        self.bars: dict[str, object] | None = {} if show else None
        self.main = None
        if show:
            from tqdm import tqdm

            self._tqdm = tqdm
            self.main = tqdm(
                total=self.total, initial=self.done0, desc="sweep", file=sys.stderr,
                dynamic_ncols=True, position=0,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} epochs "
                "[{elapsed}<{remaining}] {postfix}",
            )  # fmt: skip

    def _each(self) -> dict[str, float]:
        # a run stopped by patience has nothing left: it counts as its whole schedule
        return {
            name: float(epochs)
            if self.sweep.results.get(name) == "early-stopped"
            else min(progress(self.out / name, epochs)[0], epochs)
            for name, epochs in self.epochs.items()
        }

    def _gained(self, each: dict[str, float]) -> float:
        """Epochs trained since the sweep started, from ``each`` (:meth:`_each` now): a
        run that restarted from epoch 0 (its checkpoint lost) counts from there, not
        as a negative step."""
        return sum(n - self.base[k] if n >= self.base[k] else n for k, n in each.items())

    def say(self, message: str) -> None:
        if self.main is not None:
            self.main.write(message, file=sys.stderr)
        else:
            self.sweep.log(message)

    def started(self, run: Run, verb: str, threads: int) -> None:
        self.say(f"{verb} {run.name} ({threads} threads)")
        if self.bars is not None:
            slot = 1 + len(self.bars)
            self.bars[run.name] = self._tqdm(
                total=float(run.config["epochs"]), desc=run.name, file=sys.stderr,
                dynamic_ncols=True, position=slot, leave=False,
                bar_format="  {desc} {n:.1f}/{total:.0f} epochs {postfix}",
            )  # fmt: skip

    def finished(self, run: Run, outcome: str) -> None:
        if self.bars is not None and run.name in self.bars:
            self.bars.pop(run.name).close()
        self.say(f"{outcome:11s} {run.name}")

    def update(self, running: list[Run], n_pending: int) -> None:
        each = self._each()  # each run's progress, read once per update
        done = sum(each.values())
        finished = sum(v in FINISHED for v in self.sweep.results.values())
        counts = f"{finished} finished, {len(running)} running, {n_pending} waiting"
        if self.main is not None:
            self.main.n = round(done, 2)
            self.main.set_postfix_str(counts, refresh=True)
            for run in running:
                bar = self.bars.get(run.name)
                if bar is not None:
                    bar.n, where = progress(self.out / run.name, run.config["epochs"])
                    bar.set_postfix_str(where, refresh=True)
            return
        now = time.monotonic()
        if now - self.last < self.sweep.log_every:
            return
        self.last = now
        rate = self._gained(each) / (now - self.start)  # epochs per second
        eta = f"{(self.total - done) / rate / 60:.0f} min" if rate > 0 else "unknown"
        where = "; ".join(
            f"{r.name}: {progress(self.out / r.name, r.config['epochs'])[1]}" for r in running
        )
        self.sweep.log(
            f"sweep: {counts}; {done:.1f}/{self.total:.0f} epochs, {rate * 3600:.2f} epochs/h, "
            f"eta {eta}" + (f" | {where}" if where else "")
        )

    def close(self) -> None:
        for bar in (self.bars or {}).values():
            bar.close()
        if self.main is not None:
            self.main.close()
