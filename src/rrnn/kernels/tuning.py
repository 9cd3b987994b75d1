"""Dispatch measured on the machine that runs it.

The first time ``kernel="auto"`` meets a *shape class* where both the shared-row
kernel and the reference path can run (an LSTM/GRU sequence on CPU with a uniform
sharing rate), it times both briefly on random data of that shape, forward and,
where the call needs gradients, backward (``torch.autograd.grad``, so no ``.grad``
is touched; the random number generator is restored afterwards, so a run's
numbers do not depend on whether it measured). The faster path is kept for the
class, in memory and in a cache file per machine, like the compiled kernel:
``$RRNN_CACHE_DIR/dispatch/<machine key>.json``. The machine key is the CPU model
and flags, the torch version, the thread count and the kernels' identity (their
sources and build), so another machine, torch, ``torch.set_num_threads`` or kernel
measures afresh. A cache file that cannot be parsed, has
another format version or names another machine is ignored and rewritten.

A shape class is (cell, layers, input size, hidden size, shared rows per layer,
dtype, whether gradients are needed, batch rounded up to a power of two, steps
1 / 2-8 / 9-64 / 65+).

``RRNN_DISPATCH=static`` turns measuring off: ``auto`` then uses the thresholds
in :data:`rrnn.kernels.SHARED_ROW_MIN_RATE`, measured on one 2-core machine.
``RRNN_KERNEL=reference`` (or ``shared-row``) pins the path of every module left
at ``kernel="auto"``; ``module.kernel = ...`` pins one module.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from ..timing import interleaved

FORMAT = 1
_lock = threading.Lock()
_local = threading.local()
_tables: dict[str, dict] = {}  # machine key -> {class key: record}
# shared-row is kept when its median time is at least 2% below reference's: within
# that, the two are a tie this measurement cannot split, and torch's own kernel is kept
# (GRU r = 0, H = 650 on the AMD EPYC: chosen by a hair, then 0.96-0.98x in rrnn bench)
MIN_GAIN = 1.02
# Medians closer than this are timed again for TIE_BUDGET_S more: a 220 ms training
# call gets three rounds in the first second, and on a noisy host (AMD EPYC, LSTM
# r = 0, B = 80 x 35) three rounds said shared-row 6% faster where eight said 4%
# slower (docs/kernels.md, "Dispatch measured where it runs").
TIE = 0.06
TIE_BUDGET_S = 3.0


def enabled() -> bool:
    return os.environ.get("RRNN_DISPATCH", "tune").lower() != "static"


def measuring() -> bool:
    """True while this thread times candidate paths (calls inside take them as asked)."""
    return getattr(_local, "busy", False)


@functools.lru_cache(maxsize=1)
def _cpu() -> tuple[str, str]:
    """(model name, flags) for the dispatch key."""
    import platform

    from ..fileio import cpu_info

    info = cpu_info()
    model = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    return model, info.get("flags") or info.get("Features") or ""


def machine_key() -> tuple[str, dict]:
    """(file-name-safe key, what it hashes): CPU model and flags, torch, threads, kernels."""
    return _machine_key(torch.get_num_threads())


@functools.lru_cache(maxsize=8)
def _machine_key(threads: int) -> tuple[str, dict]:
    model, flags = _cpu()
    from . import native

    info = {
        "cpu": model,
        "flags_sha1": hashlib.sha1(flags.encode()).hexdigest()[:12],
        "torch": torch.__version__,
        "threads": threads,
        "kernels": native.identity(),
    }
    key = hashlib.sha1(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]
    return key, info


def cache_path(key: str) -> Path:
    from ..fileio import cache_root

    return cache_root() / "dispatch" / f"{key}.json"


def _steps_bucket(steps: int) -> str:
    return "1" if steps == 1 else "2-8" if steps <= 8 else "9-64" if steps <= 64 else "65+"


def class_key(module, data, steps: int, needs_grad: bool) -> str:
    batch = data.size(0 if module.batch_first else 1)
    bucket = 1 << max(0, (int(batch) - 1).bit_length())
    shares = "-".join(str(s) for s in module.uniform_shares)
    return (
        f"{module.cell}|L{module.num_layers}|D{module.num_directions}|k{module.input_size}|"
        f"h{module.hidden_size}|s{shares}|{str(data.dtype).replace('torch.', '')}|"
        f"{'grad' if needs_grad else 'nograd'}|B{bucket}|T{_steps_bucket(steps)}"
    )


def _read(path: Path, info: dict) -> dict:
    """The cached choices in ``path``, or {} where the file is missing, corrupt,
    of another format or from another machine (never trusted then)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or data.get("machine") != info
        or not isinstance(data.get("choices"), dict)
    ):
        return {}
    good = {}
    for k, v in data["choices"].items():
        if isinstance(v, dict) and v.get("path") in ("shared-row", "reference"):
            good[k] = v
    return good


def _write(path: Path, info: dict, choices: dict) -> None:
    from ..fileio import atomic_write_text

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = dict(choices)
        merged.update(_read(path, info))  # another process's measurements win: one answer per class
        atomic_write_text(
            path, json.dumps({"format": FORMAT, "machine": info, "choices": merged}, indent=1)
        )
        choices.update(merged)
    except OSError:
        pass  # a read-only cache: the choice still holds for this process


def lookup(module, data, steps: int, needs_grad: bool) -> dict | None:
    """The recorded choice for this call's class, if any (memory, then the file)."""
    key, info = machine_key()
    cls = class_key(module, data, steps, needs_grad)
    with _lock:
        table = _tables.get(key)
        if table is None or cls not in table:
            table = _tables[key] = {**(table or {}), **_read(cache_path(key), info)}
        return table.get(cls)


def decide(module, data, hx, steps: int, needs_grad: bool, runners) -> tuple[str, str]:
    """(path, reason) for a call where both paths can run; ``runners(layer, x, h)``
    gives the two candidates, ``{"reference": fn, "shared-row": fn}`` (zero-argument
    calls returning ``(output, state)``), for the tuner's private copy of the layer."""
    record = lookup(module, data, steps, needs_grad)
    if record is None:
        record = measure(module, data, hx, steps, needs_grad, runners)
    ratio = record["reference_s"] / record["shared_row_s"]
    return record["path"], (
        f"measured on this machine for {record['class']}: shared-row {ratio:.2f}x the "
        f"reference path's speed ({record['shared_row_s'] * 1e3:.3f} vs "
        f"{record['reference_s'] * 1e3:.3f} ms)"
    )


def _time_paths(module, data, hx, needs_grad: bool, budget_s: float, runners) -> dict[str, float]:
    """Median seconds per call of each path; a near tie (within :data:`TIE`) gets
    :data:`TIE_BUDGET_S` more rounds, and the median of all of them."""
    import copy

    # a private copy: no hook of the user's module (DistributedDataParallel's
    # gradient hooks, say) can see the measurement
    module = copy.deepcopy(module)
    x = torch.randn_like(data).requires_grad_(needs_grad and data.requires_grad)
    states = tuple(torch.randn_like(h) for h in (hx if isinstance(hx, tuple) else (hx,)))
    h = states if len(states) == 2 else states[0]
    params = [p for p in module.parameters() if p.requires_grad]
    wrt = params + ([x] if x.requires_grad else [])
    runs = runners(module, x, h)

    def timed(name):
        def call():
            with torch.set_grad_enabled(needs_grad):
                out, _ = runs[name]()
                if needs_grad and wrt:
                    torch.autograd.grad(out.sum(), wrt, allow_unused=True)

        return call

    fns = {name: timed(name) for name in runs}
    # warm-up: first calls pay for allocation and the compiled kernel
    times = interleaved(fns, 15, warmup=1, budget_s=budget_s)
    med = {name: statistics.median(v) for name, v in times.items()}
    if abs(med["reference"] / med["shared-row"] - 1) < TIE:
        for name, more in interleaved(fns, 45, warmup=0, budget_s=TIE_BUDGET_S).items():
            times[name] += more
        med = {name: statistics.median(v) for name, v in times.items()}
    return med


def measure(module, data, hx, steps: int, needs_grad: bool, runners, budget_s: float = 1.0) -> dict:
    """Time both paths (``runners``, as :func:`decide` takes them) for this call's
    class and record the faster."""
    key, info = machine_key()
    cls = class_key(module, data, steps, needs_grad)
    _local.busy = True
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad() if not needs_grad else _null():
            med = _time_paths(module, data, hx, needs_grad, budget_s, runners)
    finally:
        _local.busy = False
    record = {
        "class": cls,
        "path": "shared-row" if med["shared-row"] * MIN_GAIN < med["reference"] else "reference",
        "shared_row_s": med["shared-row"],
        "reference_s": med["reference"],
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with _lock:
        table = _tables.setdefault(key, {})
        table[cls] = record
        _write(cache_path(key), info, table)
        return table[cls]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def snapshot() -> dict:
    """This machine's choices known to this process (class -> record), for a
    training checkpoint: a resumed run takes the paths the run took, whatever a
    new measurement would say, so that it reproduces the run's numbers."""
    key, _ = machine_key()
    with _lock:
        return {k: dict(v) for k, v in _tables.get(key, {}).items()}


def preload(choices: dict) -> None:
    """Put a checkpoint's choices in front of the table (memory only)."""
    if not isinstance(choices, dict):
        return
    key, _ = machine_key()
    good = {
        k: v
        for k, v in choices.items()
        if isinstance(v, dict)
        and v.get("path") in ("shared-row", "reference")
        and isinstance(v.get("shared_row_s"), (int, float))
        and isinstance(v.get("reference_s"), (int, float))
    }
    with _lock:
        table = _tables.get(key)
        if table is None:
            table = _tables[key] = _read(cache_path(key), machine_key()[1])
        table.update(good)


def forget() -> None:
    """Drop the in-memory table (the files stay); for tests and after tuning by hand."""
    with _lock:
        _tables.clear()
