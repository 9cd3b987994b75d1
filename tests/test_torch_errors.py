"""Misuse raises the exception class torch.nn raises, at the same stage, so that code
written for torch.nn that catches it by class catches ours too."""

import pytest
import torch
from torch import nn

import rrnn

PAIRS = [(nn.RNN, rrnn.RestrictedRNN), (nn.GRU, rrnn.RestrictedGRU),
         (nn.LSTM, rrnn.RestrictedLSTM)]  # fmt: skip
CELL_PAIRS = [(nn.RNNCell, rrnn.RestrictedRNNCell), (nn.GRUCell, rrnn.RestrictedGRUCell),
              (nn.LSTMCell, rrnn.RestrictedLSTMCell)]  # fmt: skip
IDS = ["rnn", "gru", "lstm"]


def _raised(fn):
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the class is what is compared
        return type(err), str(err)
    return None, ""


def _same(theirs, ours):
    (t_cls, t_msg), (o_cls, o_msg) = _raised(theirs), _raised(ours)
    assert t_cls is not None, "torch.nn accepts this: the case is wrong"
    assert o_cls is t_cls, f"torch.nn raises {t_cls.__name__} ({t_msg}); ours {o_cls} ({o_msg})"


CONSTRUCTION = {
    "input_size float": ((3.0, 5), {}),
    "input_size str": (("10", 5), {}),
    "hidden_size float": ((3, 2.5), {}),
    "input_size 0": ((0, 5), {}),
    "hidden_size negative": ((3, -1), {}),
    "batch_first str": ((3, 5), {"batch_first": "False"}),
    "batch_first int": ((3, 5), {"batch_first": 1}),
    "bias int": ((3, 5), {"bias": 1}),
    "dropout 2": ((3, 5), {"dropout": 2.0}),
}


@pytest.mark.parametrize("case", CONSTRUCTION)
@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_construction_errors_have_torchs_class(pair, case):
    theirs, ours = pair
    args, kwargs = CONSTRUCTION[case]
    _same(lambda: theirs(*args, **kwargs), lambda: ours(*args, **kwargs, sharing_rate=0.5))


def _state(cls, h):
    return (h, h.clone()) if "LSTM" in cls.__name__ else h


FORWARD = {
    "float64 input": lambda c: (torch.randn(4, 2, 3, dtype=torch.float64), None),
    "integer input": lambda c: (torch.ones(4, 2, 3, dtype=torch.long), None),
    "wrong input size": lambda c: (torch.randn(4, 2, 7), None),
    "1-D input": lambda c: (torch.randn(3), None),
    "state of another batch": lambda c: (torch.randn(4, 2, 3), _state(c, torch.zeros(2, 5, 5))),
    "state of too few layers": lambda c: (torch.randn(4, 2, 3), _state(c, torch.zeros(1, 2, 5))),
}


@pytest.mark.parametrize("case", FORWARD)
@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_forward_errors_have_torchs_class(pair, case):
    theirs, ours = pair
    t, o = theirs(3, 5, 2), ours(3, 5, 2, sharing_rate=0.5)
    x, hx = FORWARD[case](theirs)
    _same(lambda: t(x, hx), lambda: o(x, hx))


CELL_FORWARD = {
    "float64 input": lambda c: (torch.randn(2, 3, dtype=torch.float64), None),
    "wrong input size": lambda c: (torch.randn(2, 11), None),
    "wrong hidden size": lambda c: (torch.randn(2, 3), _state(c, torch.zeros(2, 21))),
    "batch mismatch": lambda c: (torch.randn(2, 3), _state(c, torch.zeros(5, 5))),
    "3-D input": lambda c: (torch.randn(1, 2, 3), None),
}


@pytest.mark.parametrize("case", CELL_FORWARD)
@pytest.mark.parametrize("pair", CELL_PAIRS, ids=IDS)
def test_cell_errors_have_torchs_class(pair, case):
    theirs, ours = pair
    t, o = theirs(3, 5), ours(3, 5, sharing_rate=0.5)
    x, hx = CELL_FORWARD[case](theirs)
    _same(lambda: t(x, hx), lambda: o(x, hx))


def test_batch_first_string_is_refused_not_taken_as_true():
    with pytest.raises(TypeError, match="batch_first should be of type bool, got: str"):
        rrnn.RestrictedLSTM(3, 5, batch_first="False")
