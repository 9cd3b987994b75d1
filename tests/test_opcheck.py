"""torch.library.opcheck on every ``rrnn::`` operator, on the C kernels and on the
torch-op versions that run without a compiler.

opcheck's schema test fails when an operator writes an argument its schema does not
mark mutable; its fake-tensor and AOT tests check the Meta kernels against the CPU
ones. Running it on both paths makes the schema the one contract of what each
operator overwrites. The samples are the calls the layers and the fused loss make
(recorded under a dispatch mode), plus hand-made calls of the public step operators
that no layer uses.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import rrnn
from rrnn.kernels import native, ops
from rrnn.lm.loss import linear_cross_entropy

OPS = ("lstm_step", "lstm_step_backward", "gru_step", "gru_step_backward", "lstm_seq",
       "lstm_seq_backward", "lstm_seq_infer", "gru_seq", "gru_seq_backward", "lstm_stream",
       "gru_stream", "softmax_xent_")  # fmt: skip
NO_FALLBACK = {"lstm_stream", "gru_stream"}  # refuse to run without the compiled kernels, by design


class _Record(TorchDispatchMode):
    """Keeps a copy of the arguments of every rrnn operator called under it."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, list] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "rrnn":
            copy = [
                [a.clone() if isinstance(a, torch.Tensor) else a for a in x]
                if isinstance(x, list) else x.clone() if isinstance(x, torch.Tensor) else x
                for x in args
            ]  # fmt: skip
            self.calls.setdefault(func._schema.name.split("::")[1], []).append(copy)
        return func(*args, **(kwargs or {}))


def _step_samples(dtype) -> dict[str, list]:
    B, d, s = 3, 5, 2
    q = d - s
    r = lambda *shape: torch.randn(*shape, dtype=dtype)  # noqa: E731
    p = lambda *shape: torch.rand(*shape, dtype=dtype)  # noqa: E731  gate values in (0, 1)
    m4, m3 = s + 4 * q, s + 3 * q
    return {
        "lstm_step": [[r(B, m4), r(B, d), r(B, d), r(B, d), r(B, m4), r(B, s), r(B, q), r(B, d), s]],
        "lstm_step_backward": [[p(B, m4), r(B, s), r(B, q), r(B, d), r(B, d), r(B, d), r(B, d),
                                r(B, m4), r(B, d), s]],  # fmt: skip
        # the per-layer streaming step (bidirectional GRUs; gru_stream runs the others)
        "gru_step": [[r(B, m3), r(B, m3), r(B, d), r(B, d), r(B, d), r(B, q), r(B, d), r(B, d), s]],
        "gru_step_backward": [[p(B, d), p(B, q), r(B, d), r(B, d), r(B, d), r(B, d), r(B, m3),
                               r(B, m3), r(B, d), s]],  # fmt: skip
    }


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["f32", "f64"])
def samples(request) -> dict[str, list]:
    dtype = request.param
    torch.manual_seed(0)
    record = _Record()
    with record:
        # r = 0.8: training folds the second layer's shared rows too (s >= 2q)
        for cls, rate in ((rrnn.RestrictedLSTM, 0.4), (rrnn.RestrictedGRU, 0.4), (rrnn.RestrictedLSTM, 0.8)):
            for steps in (1, 4):  # one step (gru_step) and a sequence
                m = cls(3, 5, 2, sharing_rate=rate, dtype=dtype)
                m.kernel = "shared-row"
                x = torch.randn(steps, 2, 3, dtype=dtype, requires_grad=True)
                m(x)[0].sum().backward()
                with torch.no_grad():  # a sequence without autograd (lstm_seq_infer)
                    m(x)
            with torch.no_grad():  # one streamed step (lstm_stream, gru_stream)
                cls(3, 5, 2, sharing_rate=0.4, dtype=dtype).eval()(torch.randn(1, 2, 3, dtype=dtype))
        hidden = torch.randn(6, 4, dtype=dtype, requires_grad=True)
        weight = torch.randn(7, 4, dtype=dtype, requires_grad=True)
        bias = torch.randn(7, dtype=dtype, requires_grad=True)
        linear_cross_entropy(hidden, weight, bias, torch.randint(0, 7, (6,))).backward()
    calls = record.calls
    for name, args in _step_samples(dtype).items():
        calls.setdefault(name, []).extend(args)
    return calls


def test_every_operator_has_a_sample(samples):
    assert set(samples) == set(OPS)


@pytest.fixture(params=["C", "torch-ops"])
def path(request, monkeypatch):
    if request.param == "C":
        if native.library() is None:
            pytest.skip("no C compiler here")
    else:
        monkeypatch.setattr(native, "kernel", lambda name, dtype: None)
    return request.param


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, samples, path):
    if path == "torch-ops" and op in NO_FALLBACK:
        pytest.skip(f"rrnn::{op} has no torch-op version")
    for args in _last_of_each_kind(op, samples[op]):  # each opcheck run costs seconds
        torch.library.opcheck(getattr(torch.ops.rrnn, op).default, tuple(args))


# the operators with a folded form (the shared rows as (x_t + h) S^T), and where
# their calls say so: lstm_seq_infer's ``fold``, lstm_seq's optional ``x`` and
# lstm_seq_backward's optional ``g``
FOLD_ARG = {"lstm_seq_infer": 8, "lstm_seq": 10, "lstm_seq_backward": 11}


def _last_of_each_kind(op: str, calls: list) -> list:
    """The last call (the longest sequence), and for an operator with a folded form
    the last one of each form (the first layer of the sample models is narrower than
    h: not folded; the second is folded)."""
    if op not in FOLD_ARG:
        return calls[-1:]
    last = {}
    for args in calls:
        last[_fold(op, args)] = args
    return list(last.values())


def _fold(op: str, args: list) -> bool:
    """Whether a call takes the folded form (the dispatcher drops a trailing
    argument left at its default)."""
    i = FOLD_ARG[op]
    return len(args) > i and args[i] is not None and args[i] is not False


@pytest.mark.parametrize("op", sorted(FOLD_ARG))
def test_samples_cover_both_forms(op, samples):
    assert {_fold(op, args) for args in samples[op]} == {False, True}


@pytest.mark.parametrize("op", sorted(set(OPS) - NO_FALLBACK))
def test_both_paths_write_the_same_numbers(op, samples, monkeypatch):
    if native.library() is None:
        pytest.skip("no C compiler here")
    fn = getattr(torch.ops.rrnn, op).default
    written = ops._written(op)
    names = [a.name for a in fn._schema.arguments]
    for args in samples[op]:
        results = []
        for fallback in (False, True):
            with monkeypatch.context() as patch:
                if fallback:
                    patch.setattr(native, "kernel", lambda name, dtype: None)
                copy = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
                fn(*copy)
            results.append(copy)
        for name, c, t, original in zip(names, *results, args):
            if not isinstance(original, torch.Tensor):
                continue
            if name in written:
                torch.testing.assert_close(c, t, msg=lambda m, n=name: f"rrnn::{op} {n}: {m}")
            else:  # read-only on both paths, as the schema says
                assert torch.equal(c, original) and torch.equal(t, original), (op, name)


def test_lstm_step_backward_leaves_dh_and_dc_for_the_caller(path):
    (args,) = _step_samples(torch.float64)["lstm_step_backward"]
    dh, dc = args[5].clone(), args[6].clone()
    ops.lstm_step_backward(*args)
    assert torch.equal(args[5], dh) and torch.equal(args[6], dc)
