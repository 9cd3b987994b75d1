"""The 3 x 200 LSTM stacks the deployment benchmarks export, shared by
bench_deploy.py (ONNX Runtime) and bench_executorch.py (ExecuTorch): each
compressed form beside the torch.nn LSTM it is measured against, at the budget of
a restricted LSTM at r = 0.5 (542,700 recurrent parameters; docs/compression.md)."""

from __future__ import annotations

import torch

import rrnn
from rrnn.baselines.lowrank import LowRankRNN
from rrnn.deploy import compact, export_form

H = 200
METHODS = ("restrict", "lowrank", "projection")


def add_arguments(parser, verb: str) -> None:
    """``--method`` and ``--rates``, the stack choice both benchmarks share."""
    parser.add_argument("--method", choices=METHODS, default="restrict",
                        help=f"which compressed stack to {verb} (default restrict)")  # fmt: skip
    parser.add_argument(
        "--rates", default="0.5,0.9", type=lambda s: [float(r) for r in s.split(",")],
        help="comma-separated sharing rates for restrict (default 0.5,0.9)",
    )


def forms(method: str, rates: list[float]):
    """(label, {name: (module, state width)}); "torch" is the reference in each."""
    if method == "restrict":
        for rate in rates:
            layer = rrnn.RestrictedLSTM(H, H, 3, sharing_rate=rate).eval()
            yield (
                f"r={rate:g}",
                {"compact": (compact(layer), H), "torch": (layer.to_torch().eval(), H)},
            )
    elif method == "lowrank":
        stack = LowRankRNN("lstm", H, H, 3, rank=90).eval()
        yield "rank 90", {"factored": (export_form(stack), H), "as-trained": (stack, H),
                          "torch": (stack.to_dense().eval(), H)}  # fmt: skip
    elif method == "projection":
        lstm = torch.nn.LSTM(H, H, 3, proj_size=82).eval()
        yield (
            "proj 82",
            {"plain-ops": (export_form(lstm), 82), "torch": (torch.nn.LSTM(H, H, 3).eval(), H)},
        )
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
