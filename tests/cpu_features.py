"""What torch itself can do on this CPU, probed once, for tests that compare
with torch.nn under a feature torch.nn lacks on some CPUs.

On an AVX2-only CPU (no AVX-512), oneDNN has no bfloat16 LSTM primitive, so
torch.nn.LSTM under CPU bfloat16 autocast raises "could not create a primitive
descriptor for the LSTM forward propagation primitive". A test that compares with
it there skips with that reason instead of failing.
"""

import functools

import pytest
import torch


@functools.cache
def _autocast_failure(cell: str) -> str | None:
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](4, 4)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(torch.randn(2, 1, 4))
    except RuntimeError as err:
        return str(err).splitlines()[0]
    return None


def skip_unless_torch_autocasts(cell: str) -> None:
    """Skip the calling test where torch.nn's own ``cell`` fails under CPU bf16 autocast."""
    why = _autocast_failure(cell)
    if why is not None:
        pytest.skip(f"torch.nn.{cell.upper()} itself fails under CPU bfloat16 autocast here: {why}")
