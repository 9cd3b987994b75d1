import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _static_dispatch(request, monkeypatch):
    """Tests see the fixed dispatch thresholds (a path chosen by timing would vary
    from run to run); tests marked ``tuning`` exercise the measured dispatch."""
    if "tuning" not in request.keywords:
        monkeypatch.setenv("RRNN_DISPATCH", "static")
    yield
