"""The probe that skips autocast comparisons where torch.nn itself cannot run them."""

import pytest
import torch

from . import cpu_features as F


def test_a_cpu_without_a_bf16_lstm_primitive_skips_with_torchs_reason(monkeypatch):
    message = "could not create a primitive descriptor for the LSTM forward propagation primitive"

    def fails(self, *args, **kwargs):
        raise RuntimeError(message + "\nmore detail")

    F._autocast_failure.cache_clear()
    monkeypatch.setattr(torch.nn.LSTM, "forward", fails)
    try:
        with pytest.raises(pytest.skip.Exception, match="primitive descriptor"):
            F.skip_unless_torch_autocasts("lstm")
    finally:
        F._autocast_failure.cache_clear()


def test_where_torch_autocasts_nothing_is_skipped(monkeypatch):
    F._autocast_failure.cache_clear()
    monkeypatch.setattr(F, "_autocast_failure", lambda cell: None)
    F.skip_unless_torch_autocasts("gru")  # returns: the comparison runs
