"""rrnn: compact recurrent networks (Restricted RNN / GRU / LSTM) for PyTorch."""

from .modules import (
    RestrictedGRU,
    RestrictedGRUCell,
    RestrictedLSTM,
    RestrictedLSTMCell,
    RestrictedRNN,
    RestrictedRNNBase,
    RestrictedRNNCell,
)
from .restriction import Restriction, classical_count, compression_rate, count_parameters

__version__ = "0.1.0"

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
