"""The pure maths: counts, index sets and sharing-rate parsing, without modules."""

from decimal import ROUND_HALF_UP, Decimal

import pytest
import torch

from rrnn import restriction as R
from rrnn.paper import PTB_COUNT_OFFSET, TABLE_II, TABLE_II_RATES


def torch_round(x: float) -> int:
    return int(torch.round(torch.tensor(x, dtype=torch.float64)).item())


@pytest.mark.parametrize("rate", [0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1, 0.33, 0.999, 0.125, 0.375])
@pytest.mark.parametrize("d", [1, 7, 8, 200, 650])
def test_shared_rows_rounds_like_torch(rate, d):
    assert R.shared_rows(rate, d) == torch_round(rate * d)


def test_round_half_to_even():
    # 0.5 * 5 = 2.5 -> 2 ; 0.5 * 7 = 3.5 -> 4 (banker's rounding, as torch.round)
    assert R.shared_rows(0.5, 5) == 2
    assert R.shared_rows(0.5, 7) == 4


def hand_count(n, k_x, k_h, d, s, bias=True):
    """Per layer and direction, uniform rate: shared rows read by both inputs with
    max(k) columns, private rows per (input, gate)."""
    b = int(bias)
    return s * (max(k_x, k_h) + b) + n * (d - s) * (k_x + b) + n * (d - s) * (k_h + b)


@pytest.mark.parametrize("mode,n", [("rnn", 1), ("gru", 3), ("lstm", 4)])
@pytest.mark.parametrize("rate", [0, 0.1, 0.5, 0.95, 1, 0.33])
@pytest.mark.parametrize("bias", [True, False])
def test_count_matches_hand_count(mode, n, rate, bias):
    k_x, d, layers = 13, 10, 3
    s = torch_round(rate * d)
    for bidir in (False, True):
        dirs = 2 if bidir else 1
        expected = hand_count(n, k_x, d, d, s, bias)
        expected += (layers - 1) * hand_count(n, d * dirs, d, d, s, bias)
        got = R.count_parameters(mode, k_x, d, layers, rate, bias, bidir)
        assert got == dirs * expected


@pytest.mark.parametrize("mode", R.MODES)
@pytest.mark.parametrize("rate", [0, 0.1, 0.5, 0.9, 1])
def test_count_equals_paper_formula(mode, rate):
    k = d = 200
    per_layer = R.count_parameters(mode, k, d, 1, rate)
    assert per_layer == R.paper_formula(mode, k, d, rate)
    assert R.count_parameters(mode, k, d, 3, rate) == 3 * per_layer


@pytest.mark.parametrize("mode,n", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_classical_count_is_torch_count(mode, n):
    k, d, layers = 9, 6, 2
    expected = n * d * (k + d + 2) + (layers - 1) * n * d * (d + d + 2)
    assert R.classical_count(mode, k, d, layers) == expected
    assert R.compression_rate(mode, k, d, layers, 0.0) == 1.0


def test_compression_rate_approaches_one_minus_r():
    # paper III-B: C = (mnd - (mn-1)s)/(mnd) ~= 1 - r for large n
    c = R.compression_rate("lstm", 200, 200, 1, 0.5)
    assert c == pytest.approx((8 * 200 - 7 * 100) / (8 * 200))


def test_table_ii_reproduced_with_decoder_offset():
    """The paper's Table II = our exact count + (V - E) = + 9,800, rounded half up."""
    for cell, printed in TABLE_II.items():
        for rate, value in zip(TABLE_II_RATES, printed):
            exact = R.count_parameters(cell, 200, 200, 3, rate)
            shown = Decimal(exact + PTB_COUNT_OFFSET) / Decimal(10**6)
            assert shown.quantize(Decimal("0.001"), ROUND_HALF_UP) == Decimal(str(value)), (
                cell,
                rate,
                exact,
            )


def test_generalized_table_counts_and_tail():
    # x reads 5 shared rows (gate f), h reads 3: rows 3..4 are read by x alone.
    res = R.Restriction.from_rates("lstm", 3, 5, [[0.4, 1.0, 0.2, 0.0], [0.6, 0.6, 0.6, 0.6]])
    assert res.shares == ((2, 5, 1, 0), (3, 3, 3, 3))
    assert res.reach == (5, 3) and res.head_rows == 3 and res.tail_rows == 2
    assert res.tail_owner == 0 and res.tail_cols == 3
    q_x, q_h = 3 + 0 + 4 + 5, 4 * 2
    assert res.d_r == 5 + q_x + q_h
    assert res.num_parameters() == 3 * (5 + 1) + 2 * (3 + 1) + q_x * (3 + 1) + q_h * (5 + 1)


def test_gather_index_matches_layout():
    res = R.Restriction.from_rates("gru", 4, 3, [[1 / 3, 2 / 3, 0.0], [1.0, 0.0, 1 / 3]])
    # x: s = (1, 2, 0), q = (2, 1, 3); source = [shared 0..1 ; 6 private rows]
    assert res.gather_index(0) == [0, 2, 3, 0, 1, 4, 5, 6, 7]
    # h: s = (3, 0, 1), q = (0, 3, 2); source = [shared 0..2 ; 5 private rows]
    assert res.gather_index(1) == [0, 1, 2, 3, 4, 5, 0, 6, 7]


@pytest.mark.parametrize(
    "bad,exc,words",
    [
        (1.5, ValueError, "[0, 1]"),
        (-0.1, ValueError, "[0, 1]"),
        (float("nan"), ValueError, "nan"),
        ("half", TypeError, "'half'"),
        ([[0.5] * 3, [0.5] * 3], ValueError, "(2, 4)"),
        ([0.5, 0.5], ValueError, "per layer"),
        ([[0.5] * 4, [0.5, 0.5, 2.0, 0.5]], ValueError, "[1][2]"),
    ],
)
def test_bad_sharing_rates(bad, exc, words):
    with pytest.raises(exc) as info:
        R.resolve_sharing_rates(bad, 3, 4)
    assert "sharing_rate" in str(info.value) and words in str(info.value)


def test_per_layer_rates():
    tables = R.resolve_sharing_rates([0.0, 0.5, [[1.0] * 3, [0.0] * 3]], 3, 3)
    assert tables[0] == ((0.0,) * 3,) * 2 and tables[1] == ((0.5,) * 3,) * 2
    assert tables[2] == ((1.0,) * 3, (0.0,) * 3)
