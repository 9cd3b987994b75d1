"""Figures printed in Diao, Ding & Tarokh (2019), read from ``paper_tables.json``
(shipped with the package; the file names its source)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def tables() -> dict:
    """The paper's Tables II-IV as printed (see the file's ``source`` and notes)."""
    return json.loads(resources.files("rrnn").joinpath("paper_tables.json").read_text())


#: Sharing rates of the paper's tables, in its column order.
TABLE_II_RATES = tuple(float(r) for r in tables()["sharing_rates"])

#: Table II, "model complexity" in millions: 3 layers, embedding = hidden = 200.
TABLE_II = {cell: tuple(v) for cell, v in tables()["table_ii_millions"].items()}

#: The authors' counting code added V - E (the decoder bias of a 10,000-word
#: vocabulary minus the embedding size 200) to the recurrent count, so their
#: Table II is our exact recurrent count + 9,800.
PTB_COUNT_OFFSET = 10_000 - 200

#: Model and training sizes of every run in Tables III and IV.
PAPER_SETUP = tables()["setup"]


def paper_perplexity(
    dataset: str, variant: str, cell: str, rate: float
) -> tuple[float, float] | None:
    """``(test, valid)`` perplexity printed in Table III (ptb) or IV (wikitext-2),
    or None where the paper has no such entry."""
    rows = tables()["perplexity"].get(dataset, {}).get(variant, {}).get(cell)
    if rows is None:
        return None
    for r, entry in zip(TABLE_II_RATES, rows):
        if abs(r - rate) < 1e-9:
            return entry[0], entry[1]
    return None
