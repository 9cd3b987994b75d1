"""The ``rrnn`` command. Each subcommand parses its flags here and imports its
implementation lazily, so ``rrnn --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys

from .restriction import MODES


def _rates(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rates must be comma-separated numbers such as 1,0.5,0; got {text!r}"
        ) from None


def _cells(text: str) -> list[str]:
    cells = [c.strip().lower() for c in text.split(",") if c.strip()]
    bad = [c for c in cells if c not in MODES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown cell {bad[0]!r}; choose from {', '.join(MODES)}")
    return cells


def cmd_params(args: argparse.Namespace) -> int:
    from .paper import TABLE_II_RATES
    from .params_table import build_rows, format_table

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrnn",
        description="Restricted recurrent networks: parameter counts, language-model "
        "training and evaluation, benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "params",
        help="exact recurrent parameter counts (the paper's Table II by default)",
        description="Exact parameter counts of restricted RNN/GRU/LSTM stacks. With the "
        "default sizes it prints the paper's Table II beside our counts.",
    )
    p.add_argument(
        "--cells",
        type=_cells,
        default=list(MODES),
        help="comma-separated cells (default: rnn,gru,lstm)",
    )
    p.add_argument(
        "--rates",
        type=_rates,
        default=None,
        help="comma-separated sharing rates (default: the paper's 1,0.95,0.9,0.7,0.5,0.3,0.1,0)",
    )
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
    p.set_defaults(func=cmd_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"rrnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
