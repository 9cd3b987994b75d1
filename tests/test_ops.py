"""The C kernels as dispatcher operators: every call goes through torch.ops.rrnn.*,
and bad arguments get a clear error before any pointer is touched."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rrnn import RestrictedGRU, RestrictedLSTM
from rrnn.kernels import ops


class _Log(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("cls, fwd, bwd", [(RestrictedLSTM, "rrnn.lstm_step.default",
                                            "rrnn.lstm_step_backward.default"),
                                           (RestrictedGRU, "rrnn.gru_step.default",
                                            "rrnn.gru_step_backward.default")])  # fmt: skip
def test_sequences_run_through_the_registered_operators(cls, fwd, bwd):
    m = cls(6, 8, 2, sharing_rate=0.5)
    m.kernel = "shared-row"
    x = torch.randn(4, 3, 6, requires_grad=True)
    with _Log() as log:
        out, _ = m(x)
        out.sum().backward()
    assert log.names.count(fwd) == 4 * 2 and log.names.count(bwd) == 4 * 2


def test_streaming_runs_through_the_stack_operator():
    m = RestrictedLSTM(6, 8, 3, sharing_rate=0.5).eval()
    with torch.no_grad(), _Log() as log:
        m(torch.randn(1, 2, 6))
    assert "rrnn.lstm_stream.default" in log.names


def _lstm_args(B=2, d=5, s=2, dtype=torch.float32):
    q = d - s
    m = s + 4 * q
    e = lambda *shape: torch.zeros(*shape, dtype=dtype)  # noqa: E731
    return [e(B, m), e(B, d), e(B, d), e(B, d), e(B, m), e(B, s), e(B, q), e(B, d), s]


def test_operators_check_dtype_shape_and_contiguity():
    args = _lstm_args()
    ops.lstm_step(*args)  # fine
    bad = list(args)
    bad[1] = bad[1].double()
    with pytest.raises(ValueError, match="c_prev has dtype torch.float64"):
        ops.lstm_step(*bad)
    bad = list(args)
    bad[4] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"sig has shape \(2, 3\), expected \(2, 14\)"):
        ops.lstm_step(*bad)
    bad = list(args)
    bad[2] = torch.zeros(5, 2).t()
    with pytest.raises(ValueError, match="c must be contiguous"):
        ops.lstm_step(*bad)
    bad = list(args)
    bad[-1] = 9
    with pytest.raises(ValueError, match="outside"):
        ops.lstm_step(*bad)
    with pytest.raises(ValueError, match="not supported"):
        ops.lstm_step(*[a.to(torch.bfloat16) if isinstance(a, torch.Tensor) else a for a in args])


def test_meta_tensors_are_checked_without_computing():
    args = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in _lstm_args()]
    ops.lstm_step(*args)
    args[0] = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match="z has shape"):
        ops.lstm_step(*args)


def test_stream_operator_checks_the_layer_lists():
    B, d, k = 1, 4, 3
    x = torch.zeros(B, k)
    h = torch.zeros(2, B, d)
    w = [torch.zeros(4 * d, k + d), torch.zeros(4 * d, d + d)]
    scratch = [torch.zeros(B, 4 * d), torch.zeros(B, 4 * d)] + [torch.zeros(B, d)] * 3
    ops.lstm_stream(x, h, h.clone(), w, [None, None], [0, 0], h.clone(), h.clone(), *scratch)
    with pytest.raises(ValueError, match="2 layers of state but 1 weights"):
        ops.lstm_stream(x, h, h.clone(), w[:1], [None], [0], h.clone(), h.clone(), *scratch)
    with pytest.raises(ValueError, match=r"weights\[1\] has shape"):
        ops.lstm_stream(x, h, h.clone(), [w[0], w[0]], [None, None], [0, 0], h.clone(),
                        h.clone(), *scratch)  # fmt: skip
