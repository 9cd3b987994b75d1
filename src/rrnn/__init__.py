"""rrnn: compact recurrent networks (Restricted RNN / GRU / LSTM) for PyTorch.

The layers load on first use (``rrnn.RestrictedLSTM``, ``from rrnn import ...``):
importing the package alone, as ``rrnn --help`` and ``rrnn params`` do, loads
neither torch nor the kernels.
"""

import sys
from typing import TYPE_CHECKING

from .restriction import Restriction, classical_count, compression_rate, count_parameters

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from . import kernels, modules  # noqa: F401
    from .modules import (
        RestrictedGRU,
        RestrictedGRUCell,
        RestrictedLSTM,
        RestrictedLSTMCell,
        RestrictedRNN,
        RestrictedRNNBase,
        RestrictedRNNCell,
    )

__version__ = "0.1.0"

_LAYERS = (
    "RestrictedRNN",
    "RestrictedGRU",
    "RestrictedLSTM",
    "RestrictedRNNBase",
    "RestrictedRNNCell",
    "RestrictedGRUCell",
    "RestrictedLSTMCell",
)
__all__ = [
    "RestrictedRNN",
    "RestrictedGRU",
    "RestrictedLSTM",
    "RestrictedRNNBase",
    "RestrictedRNNCell",
    "RestrictedGRUCell",
    "RestrictedLSTMCell",
    "Restriction",
    "count_parameters",
    "classical_count",
    "compression_rate",
]


def __getattr__(name: str):
    if name in ("modules", "kernels") and "rrnn.modules" in sys.modules:
        raise AttributeError(name)  # being imported now: the import system finds them
    if name in _LAYERS or name in ("modules", "kernels"):
        # an absolute import: ``from . import modules`` would ask this hook again
        import rrnn.modules  # torch, the kernels and their operators

        return getattr(rrnn.modules, name) if name in _LAYERS else globals()[name]
    raise AttributeError(f"module 'rrnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "modules", "kernels"})
