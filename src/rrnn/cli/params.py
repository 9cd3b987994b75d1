"""`rrnn params`: exact recurrent parameter counts (the paper's Table II)."""

from __future__ import annotations

import argparse
import json

from .flags import cell_and_rate_flags


def run(args: argparse.Namespace) -> int:
    from ..paper import TABLE_II_RATES
    from ..params_table import build_rows, format_table

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


def add_parser(sub) -> None:
    p = sub.add_parser(
        "params",
        help="exact recurrent parameter counts (the paper's Table II by default)",
        description="Exact parameter counts of restricted RNN/GRU/LSTM stacks. With the "
        "default sizes it prints the paper's Table II beside our counts.",
    )
    cell_and_rate_flags(p, "the paper's 1,0.95,0.9,0.7,0.5,0.3,0.1,0")
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
    p.set_defaults(func=run)
