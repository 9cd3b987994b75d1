"""The one timing harness: calls timed alternately, so that a machine's drift
(other load, frequency, caches) hits every candidate alike. Used by ``rrnn
bench``, the benchmarks, the report's latency and the dispatch tuner.
Imports nothing but the standard library."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    block: int = 1,
    budget_s: float | None = None,
    min_repeats: int = 3,
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed alternately, ``repeats`` times:
    each measurement is the mean over ``block`` consecutive calls. Blocks keep a
    fast call's working set in cache as in real use (streaming calls one model
    repeatedly); alternating single short calls would time cold caches. With
    ``budget_s``, rounds stop once that many seconds have passed and at least
    ``min_repeats`` rounds are in."""
    for _ in range(warmup):
        for fn in fns.values():
            for _ in range(block):
                fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    begin = time.perf_counter()
    for done in range(1, repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(block):
                fn()
            times[name].append((time.perf_counter() - start) / block)
        if budget_s is not None and done >= min_repeats and time.perf_counter() - begin > budget_s:
            break
    return times
