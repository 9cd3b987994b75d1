"""Parameter counts of the compared compression methods, and the sizes that meet
a parameter budget. Pure functions: no module is built.

Counts follow Table II's convention: the recurrent stack only (every weight and
bias of every layer), no embedding and no decoder.
"""

from __future__ import annotations

from ..restriction import num_gates

METHODS = ("restrict", "lowrank", "prune", "iss", "dense")  # rrnn train --compress
SCHEDULES = ("narang", "cubic")  # the pruning schedules (rrnn.baselines.prune)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def stacked_count(mode: str, input_size: int, widths: list[int] | tuple[int, ...]) -> int:
    """A classical stack whose layer ``l`` has ``widths[l]`` units (layer ``l+1``
    reads layer ``l``'s output): ``sum_l G*w_l*(k_l + w_l + 2)``."""
    g = num_gates(mode)
    _positive("input_size", input_size)
    total, k = 0, input_size
    for w in widths:
        _positive("width", w)
        total += g * w * (k + w + 2)
        k = w
    return total


def dense_count(mode: str, input_size: int, hidden_size: int, layers: int) -> int:
    """The torch.nn stack's count."""
    return stacked_count(mode, input_size, [hidden_size] * _positive("layers", layers))


def lowrank_count(mode: str, input_size: int, hidden_size: int, layers: int, rank: int) -> int:
    """Unshared factors: every input matrix (G*H x k) is A (G*H x rank) @ B (rank x k),
    every recurrent matrix (G*H x H) likewise; biases stay full."""
    g, h = num_gates(mode), _positive("hidden_size", hidden_size)
    check_rank(rank, input_size, hidden_size, "factors")
    total, k = 0, input_size
    for _ in range(_positive("layers", layers)):
        total += rank * (g * h + k) + rank * (g * h + h) + 2 * g * h
        k = h
    return total


def projection_count(mode: str, input_size: int, hidden_size: int, layers: int, rank: int) -> int:
    """Shared projection P (rank x H) per layer: the recurrence and the next layer
    read ``P h`` (``torch.nn.LSTM(proj_size=rank)`` for the LSTM)."""
    g, h = num_gates(mode), _positive("hidden_size", hidden_size)
    check_rank(rank, input_size, hidden_size, "projection")
    total, k = 0, input_size
    for _ in range(_positive("layers", layers)):
        total += g * h * k + g * h * rank + rank * h + 2 * g * h
        k = rank
    return total


def check_rank(rank, input_size: int, hidden_size: int, kind: str) -> None:
    _positive("rank", rank)
    limit = hidden_size - 1 if kind == "projection" else min(input_size, hidden_size)
    if rank > limit:
        what = (
            "a projection must be smaller than the hidden size (torch.nn.LSTM's proj_size rule)"
            if kind == "projection"
            else f"a factor's rank cannot exceed its matrix's smaller side "
            f"(input {input_size}, hidden {hidden_size})"
        )
        raise ValueError(f"rank {rank} is too large: {what}; use --rank <= {limit}")


def _closest(count, lo: int, hi: int, target: int) -> int:
    """The integer in [lo, hi] whose (increasing) count is closest to ``target``."""
    if count(lo) >= target:
        return lo
    a, b = lo, hi
    while a < b:  # smallest x with count(x) >= target
        m = (a + b) // 2
        if count(m) >= target:
            b = m
        else:
            a = m + 1
    return min((x for x in (a - 1, a) if lo <= x <= hi), key=lambda x: abs(count(x) - target))


def dense_hidden_for(mode: str, input_size: int, layers: int, target: int) -> int:
    """The hidden size of the classical stack whose count is closest to ``target``."""
    _positive("target_params", target)
    return _closest(lambda w: dense_count(mode, input_size, w, layers), 1, 1 << 16, target)


def rank_for(mode, input_size, hidden_size, layers, target, kind: str = "factors") -> int:
    """The rank whose low-rank count is closest to ``target``."""
    _positive("target_params", target)
    fn = lowrank_count if kind == "factors" else projection_count
    hi = hidden_size - 1 if kind == "projection" else min(input_size, hidden_size)
    if hi < 1:
        raise ValueError(f"hidden size {hidden_size} leaves no room for a projection")
    return _closest(lambda r: fn(mode, input_size, hidden_size, layers, r), 1, hi, target)


def sparsity_for(mode: str, input_size: int, hidden_size: int, layers: int, target: int) -> float:
    """The fraction of weight-matrix entries to prune (biases are kept) so that
    nonzero weights plus biases make ``target``."""
    dense = dense_count(mode, input_size, hidden_size, layers)
    biases = 2 * num_gates(mode) * hidden_size * layers
    weights = dense - biases
    keep = _positive("target_params", target) - biases
    if not 0 < keep <= weights:
        raise ValueError(
            f"a pruned {mode} {layers}x{hidden_size} stores between {biases + 1:,} and "
            f"{dense:,} parameters; target {target:,} is outside"
        )
    return 1.0 - keep / weights


def check_target(method: str, mode: str, input_size: int, hidden_size: int, layers: int,
                 target: int, kind: str = "factors") -> None:  # fmt: skip
    """Refuse a recurrent-parameter budget that ``method`` cannot reach from the
    classical ``layers x hidden_size`` stack it compresses (pruning checks its own)."""
    _positive("target_params", target)
    full = dense_count(mode, input_size, hidden_size, layers)
    if method == "dense":
        lo, hi = dense_count(mode, input_size, 1, layers), full - 1
    elif method == "lowrank":
        fn = lowrank_count if kind == "factors" else projection_count
        top = hidden_size - 1 if kind == "projection" else min(input_size, hidden_size)
        lo, hi = fn(mode, input_size, hidden_size, layers, 1), fn(mode, input_size, hidden_size, layers, top)
        hi = min(hi, full - 1)
    elif method == "iss":
        lo, hi = stacked_count(mode, input_size, [1] * layers), full
    else:
        return
    if not lo <= target <= hi:
        raise ValueError(
            f"--compress {method} of a {mode} {layers}x{hidden_size} reaches between {lo:,} "
            f"and {hi:,} recurrent parameters (the uncompressed stack has {full:,}); target "
            f"{target:,} is outside"
        )


def check_sparsity(sparsity) -> float:
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, (int, float))
        or not (0.0 <= sparsity < 1.0)
    ):
        raise ValueError(
            f"sparsity must be in [0, 1) (the fraction of weights removed), got {sparsity!r}"
        )
    return float(sparsity)
