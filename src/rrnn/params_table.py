"""``rrnn params``: exact recurrent parameter counts, beside the paper's Table II."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from .paper import PTB_COUNT_OFFSET, TABLE_II, TABLE_II_RATES
from .restriction import MODES, count_parameters

LABEL = {"rnn": "RRNN", "gru": "RGRU", "lstm": "RLSTM"}


def millions(count: int) -> str:
    """Millions with 3 decimals, rounded half up as the paper prints them."""
    value = (Decimal(count) / Decimal(10**6)).quantize(Decimal("0.001"), ROUND_HALF_UP)
    return f"{value:.3f}"


def build_rows(
    cells=MODES,
    rates=TABLE_II_RATES,
    input_size: int = 200,
    hidden_size: int = 200,
    layers: int = 3,
    bias: bool = True,
    bidirectional: bool = False,
    offset: int | None = None,
) -> dict:
    """Counts for each cell and rate. ``offset`` is added for the paper-style
    column; by default the paper's V - E = 9,800 when the sizes are the paper's."""
    paper_sizes = (input_size, hidden_size, layers, bias, bidirectional) == (
        200,
        200,
        3,
        True,
        False,
    )
    if offset is None:
        offset = PTB_COUNT_OFFSET if paper_sizes else 0
    rows = {}
    for cell in cells:
        exact = [
            count_parameters(cell, input_size, hidden_size, layers, r, bias, bidirectional)
            for r in rates
        ]
        row = {"exact": exact, "shifted": [millions(c + offset) for c in exact]}
        if paper_sizes and offset == PTB_COUNT_OFFSET and tuple(rates) == TABLE_II_RATES:
            row["paper"] = [f"{v:.3f}" for v in TABLE_II[cell]]
        rows[cell] = row
    return {"rates": list(rates), "offset": offset, "rows": rows}


def format_table(table: dict, input_size: int, hidden_size: int, layers: int) -> str:
    rates, offset, rows = table["rates"], table["offset"], table["rows"]
    shifted_label = f"+{offset:,} (M)" if offset else "(M)"
    head = f"{'r':<18}" + "".join(f"{r:>10g}" for r in rates)
    lines = [
        f"Recurrent parameters: {layers} layers, input size {input_size}, hidden size {hidden_size}",
        "",
        head,
        "-" * len(head),
    ]
    matches = total = 0
    for cell, row in rows.items():
        lines.append(f"{LABEL[cell]:<6}{'exact':<12}" + "".join(f"{c:>10,}" for c in row["exact"]))
        lines.append(f"{'':<6}{shifted_label:<12}" + "".join(f"{v:>10}" for v in row["shifted"]))
        if "paper" in row:
            lines.append(f"{'':<6}{'paper (M)':<12}" + "".join(f"{v:>10}" for v in row["paper"]))
            matches += sum(a == b for a, b in zip(row["shifted"], row["paper"]))
            total += len(rates)
    if total:
        lines += [
            "",
            f"exact + {offset:,} equals the paper's printed Table II in {matches} of {total} "
            "entries.",
            "The authors' counting code added V - E = 10,000 - 200 (the PTB decoder bias minus",
            "the embedding size) to the recurrent count; 'exact' is the true number of",
            "recurrent parameters, equal to sum(p.numel() for p in layer.parameters()).",
        ]
    return "\n".join(lines)
