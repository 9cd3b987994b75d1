"""The restriction of Diao, Ding & Tarokh (2019), section III, as plain maths.

Nothing here builds a module: index sets, pool shapes and parameter counts are
pure functions of the sizes and the sharing rates, so they can be tested (and
used to plan a model) without allocating a single weight.

Notation (one layer, one direction)
-----------------------------------
* ``n`` gates (RNN 1, GRU 3, LSTM 4), gate size ``d = hidden_size``.
* Two inputs: ``x`` (``k_x`` = that layer's input size) and ``h`` (``k_h = d``).
* A sharing-rate table ``r`` of shape ``(2, n)``: row 0 is input ``x``, row 1
  is input ``h``; column ``j`` is gate ``j`` in torch.nn order
  (RNN: -, GRU: r z n, LSTM: i f g o).
* ``s_ij = round(r_ij * d)`` shared rows (round half to even, as ``torch.round``),
  ``q_ij = d - s_ij`` private rows.

Every (input i, gate j) matrix of shape ``(d, k_i)`` takes its rows
``0 .. s_ij-1`` from the first rows of one shared block (first ``k_i`` columns)
and rows ``s_ij .. d-1`` from its own ``q_ij`` private rows. Biases follow the
same rows.

Interchange ("pool") layout, as in the authors' code: one matrix of shape
``(d_r, k_r)`` with ``d_r = s_r + sum(q)``, ``s_r = max(s)``,
``k_r = max(k_x, k_h)``::

    rows 0 .. s_r-1          shared
    next q_x0 rows           private rows of (x, gate 0)
    ...                      ... (x, gate 1) .. (x, gate n-1)
    next q_h0 rows           private rows of (h, gate 0)
    ...                      ... (h, gate n-1)

Input ``i`` reads the first ``k_i`` columns; entries no matrix reads are zero.

Compact storage (what the modules train): only entries some matrix reads.
Let ``A_i = max_j s_ij`` be the shared rows input ``i`` reads. Shared rows
``0 .. min(A_x, A_h)-1`` are read by both inputs and so use all ``k_r``
columns (the *shared head*); rows ``min(A_x, A_h) .. s_r-1`` are read by one
input only, the one with more shared rows, and use only its ``k`` columns
(the *shared tail*, empty whenever both inputs share equally).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
GATE_NAMES = {"rnn": ("h",), "gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}
INPUTS = 2  # x and h


def num_gates(mode: str) -> int:
    """Number of gates of ``mode`` ("rnn" 1, "gru" 3, "lstm" 4)."""
    try:
        return GATES[mode]
    except KeyError:
        raise ValueError(
            f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}"
        ) from None


def shared_rows(rate: float, d: int) -> int:
    """``s = round(rate * d)``, rounding half to even (the same as ``torch.round``)."""
    return int(round(float(rate) * d))


def _check_rate(value, where: str) -> float:
    if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_":
        raise TypeError(
            f"sharing_rate{where} must be a real number in [0, 1], got {value!r} of type "
            f"{type(value).__name__}"
            + (" (write 0.5, not '0.5')" if isinstance(value, str) else "")
        )
    if not isinstance(value, (int, float)):
        # numbers.Real from numpy / 0-d tensors are accepted through float()
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"sharing_rate{where} must be a number in [0, 1], got {value!r} "
                f"of type {type(value).__name__}"
            ) from None
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"sharing_rate{where} must be in [0, 1] (0 = classical cell, 1 = share "
            f"everything), got {value!r}"
        )
    return value


def _is_scalar(value) -> bool:
    """Anything that is not a sequence or an array with dimensions (strings,
    None and other odd values count as scalars, so the rate check names them)."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return tuple(shape) == ()
    return not isinstance(value, (list, tuple))


def _as_table(value, n: int, where: str) -> tuple[tuple[float, ...], ...]:
    """A float or a (2, n) table -> a (2, n) tuple of floats, validated."""
    if _is_scalar(value):
        r = _check_rate(value, where)
        return tuple((r,) * n for _ in range(INPUTS))
    rows = _to_list(value)
    if (
        not isinstance(rows, list)
        or len(rows) != INPUTS
        or any(not isinstance(row, list) or len(row) != n for row in rows)
    ):
        raise ValueError(
            f"sharing_rate{where} must be a float or a table of shape (2, {n}) "
            f"(rows: input x, input h; columns: the {n} gates), got {value!r}"
        )
    return tuple(
        tuple(_check_rate(v, f"{where}[{i}][{j}]") for j, v in enumerate(row))
        for i, row in enumerate(rows)
    )


def _to_list(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_list(v) for v in value]
    return value


def _depth(value) -> int:
    """Nesting depth of a list/tuple/array (0 for a scalar)."""
    if _is_scalar(value):
        return 0
    value = _to_list(value)
    if isinstance(value, list) and value:
        return 1 + max(_depth(v) for v in value)
    return 1


def resolve_sharing_rates(
    sharing_rate, num_layers: int, n: int
) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """Normalise ``sharing_rate`` to one ``(2, n)`` table per layer.

    Accepts a float (every layer, input and gate), a ``(2, n)`` table (every
    layer), or a list of ``num_layers`` entries, each a float or a table.
    Raises ``TypeError``/``ValueError`` naming the bad entry.
    """
    depth = _depth(sharing_rate)
    if depth in (0, 2):  # one float or one (2, n) table for every layer
        table = _as_table(sharing_rate, n, "")
        return (table,) * num_layers
    per_layer = _to_list(sharing_rate)
    if depth not in (1, 3) or len(per_layer) != num_layers:
        raise ValueError(
            f"sharing_rate must be a float, a (2, {n}) table, or a list with one "
            f"float or (2, {n}) table per layer ({num_layers} layers); got {sharing_rate!r}"
        )
    return tuple(_as_table(v, n, f"[{k}]") for k, v in enumerate(per_layer))


@dataclass(frozen=True)
class Restriction:
    """Shapes and index sets of one restricted layer (one direction).

    ``shares[i][j]`` is ``s_ij``, the shared rows of (input i, gate j);
    input 0 is x (``input_size`` columns), input 1 is h (``hidden_size``).
    """

    mode: str
    input_size: int
    hidden_size: int
    shares: tuple[tuple[int, ...], ...]

    @classmethod
    def from_rates(cls, mode: str, input_size: int, hidden_size: int, rates) -> Restriction:
        n = num_gates(mode)
        table = _as_table(rates, n, "")
        shares = tuple(tuple(shared_rows(r, hidden_size) for r in row) for row in table)
        return cls(mode, int(input_size), int(hidden_size), shares)

    # ---- sizes ----------------------------------------------------------
    @property
    def n(self) -> int:
        return num_gates(self.mode)

    @property
    def d(self) -> int:
        return self.hidden_size

    @property
    def in_sizes(self) -> tuple[int, int]:
        """``(k_x, k_h)``."""
        return (self.input_size, self.hidden_size)

    @property
    def k_r(self) -> int:
        return max(self.in_sizes)

    @property
    def privates(self) -> tuple[tuple[int, ...], ...]:
        """``q_ij = d - s_ij``."""
        return tuple(tuple(self.d - s for s in row) for row in self.shares)

    @property
    def s_r(self) -> int:
        """Rows of the shared block: ``max_ij s_ij``."""
        return max(max(row) for row in self.shares)

    @property
    def d_r(self) -> int:
        """Rows of the interchange pool: ``s_r + sum(q)``."""
        return self.s_r + sum(sum(row) for row in self.privates)

    @property
    def reach(self) -> tuple[int, int]:
        """``A_i = max_j s_ij``: how many shared rows input i reads."""
        return tuple(max(row) for row in self.shares)

    @property
    def head_rows(self) -> int:
        """Shared rows read by both inputs (stored with ``k_r`` columns)."""
        return min(self.reach)

    @property
    def tail_owner(self) -> int:
        """The input that alone reads the shared tail (0 = x, 1 = h)."""
        return 0 if self.reach[0] > self.reach[1] else 1

    @property
    def tail_rows(self) -> int:
        return self.s_r - self.head_rows

    @property
    def tail_cols(self) -> int:
        return self.in_sizes[self.tail_owner]

    def private_rows(self, i: int) -> int:
        """Total private rows of input i over all gates."""
        return sum(self.privates[i])

    # ---- counts ---------------------------------------------------------
    def num_parameters(self, bias: bool = True) -> int:
        """Trainable entries: exactly those some (input, gate) matrix reads."""
        b = 1 if bias else 0
        count = self.head_rows * (self.k_r + b) + self.tail_rows * (self.tail_cols + b)
        for i, k in enumerate(self.in_sizes):
            count += self.private_rows(i) * (k + b)
        return count

    def classical_parameters(self, bias: bool = True) -> int:
        b = 1 if bias else 0
        return sum(self.n * self.d * (k + b) for k in self.in_sizes)

    # ---- index sets -----------------------------------------------------
    def gather_index(self, i: int) -> list[int]:
        """Row index of every row of the full ``(n*d, k_i)`` matrix of input i
        into its *source* ``[shared rows 0..A_i-1 ; private rows of input i]``.

        ``W_i = source_i[index]`` where ``source_i`` stacks the shared rows
        input i reads (first ``k_i`` columns) above its private rows in gate
        order. Shared rows appear once per gate that uses them.
        """
        a_i = self.reach[i]
        index: list[int] = []
        offset = a_i
        for s, q in zip(self.shares[i], self.privates[i]):
            index.extend(range(s))
            index.extend(range(offset, offset + q))
            offset += q
        return index

    def pool_rows(self, i: int) -> list[int]:
        """Row of the interchange pool feeding each row of input i's full matrix."""
        rows: list[int] = []
        offset = self.s_r + sum(self.private_rows(k) for k in range(i))
        for s, q in zip(self.shares[i], self.privates[i]):
            rows.extend(range(s))
            rows.extend(range(offset, offset + q))
            offset += q
        return rows

    @property
    def compression_rate(self) -> float:
        return self.num_parameters() / self.classical_parameters()


def _layers(mode, input_size, hidden_size, num_layers, sharing_rate, bidirectional):
    _check_size("input_size", input_size)
    _check_size("hidden_size", hidden_size)
    _check_size("num_layers", num_layers)
    n = num_gates(mode)
    tables = resolve_sharing_rates(sharing_rate, num_layers, n)
    dirs = 2 if bidirectional else 1
    out = []
    for layer, table in enumerate(tables):
        k_x = input_size if layer == 0 else hidden_size * dirs
        out.append(Restriction.from_rates(mode, k_x, hidden_size, table))
    return out


def layer_restrictions(
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    sharing_rate=0.5,
    bidirectional: bool = False,
) -> list[Restriction]:
    """One :class:`Restriction` per layer (both directions of a layer share it)."""
    return _layers(mode, input_size, hidden_size, num_layers, sharing_rate, bidirectional)


def _check_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def count_parameters(
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    sharing_rate=0.5,
    bias: bool = True,
    bidirectional: bool = False,
) -> int:
    """Exact trainable parameter count of a restricted recurrent stack.

    Builds no module. Equals ``sum(p.numel() for p in m.parameters())`` of the
    matching ``Restricted{RNN,GRU,LSTM}``; at ``sharing_rate=0`` it equals the
    torch.nn count. For a uniform rate and ``input_size == hidden_size == k``
    each layer and direction has the paper's ``P - (2n - 1) * s * (k + 1)``.
    """
    dirs = 2 if bidirectional else 1
    layers = _layers(mode, input_size, hidden_size, num_layers, sharing_rate, bidirectional)
    return dirs * sum(r.num_parameters(bias) for r in layers)


def classical_count(
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
) -> int:
    """Parameter count of the matching torch.nn module (``sharing_rate=0``)."""
    return count_parameters(mode, input_size, hidden_size, num_layers, 0.0, bias, bidirectional)


def compression_rate(
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    sharing_rate=0.5,
    bias: bool = True,
    bidirectional: bool = False,
) -> float:
    """Restricted count / classical count (1 at ``sharing_rate=0``)."""
    restricted = count_parameters(
        mode, input_size, hidden_size, num_layers, sharing_rate, bias, bidirectional
    )
    return restricted / classical_count(
        mode, input_size, hidden_size, num_layers, bias, bidirectional
    )


def paper_formula(mode: str, k: int, d: int, rate: float, bias: bool = True) -> int:
    """The paper's count for one layer with uniform rate and ``k_x = k_h = k``:
    ``P - (mn - 1) * s * (k + 1)`` with ``m = 2`` inputs."""
    n = num_gates(mode)
    b = 1 if bias else 0
    s = shared_rows(rate, d)
    return INPUTS * n * d * (k + b) - (INPUTS * n - 1) * s * (k + b)
