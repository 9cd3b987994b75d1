"""The operators against arguments that would make a C kernel return wrong numbers:
overlapping tensors, wrong ranks, worker threads, 32-bit sizes, the build cache."""

import ctypes
import os
import re
import threading

import pytest
import torch

from rrnn.kernels import native, ops
from rrnn.kernels.ops import KernelArgumentError

needs_native = pytest.mark.skipif(native.library() is None, reason="no C compiler here")


def _lstm_step(B=3, d=4, s=2):
    q = d - s
    m = s + 4 * q
    z, c_prev = torch.randn(B, m), torch.randn(B, d)
    outs = [torch.empty(B, n) for n in (d, d, m, s, q, d)]  # c h sig tan_s tan_g tanh_c
    return [z, c_prev, *outs], s


def test_a_written_argument_that_overlaps_another_is_refused():
    args, s = _lstm_step()
    ops.lstm_step(*args, s)  # separate tensors: fine
    z = args[0]
    bad = list(args)
    bad[4] = z  # sig is written while z is read: tanh would read sigmoid's output
    with pytest.raises(KernelArgumentError, match="sig and z overlap|z and sig overlap"):
        ops.lstm_step(*bad, s)
    bad = list(args)
    bad[3] = bad[2][:, :]  # h a view of c
    with pytest.raises(KernelArgumentError, match="overlap in memory"):
        ops.lstm_step(*bad, s)


def test_inputs_may_share_memory_with_each_other():
    B, d, k = 1, 4, 3
    x, h = torch.zeros(B, k), torch.zeros(2, B, d)
    w = torch.zeros(4 * d, k + d)
    scratch = [torch.zeros(B, 4 * d), torch.zeros(B, 4 * d)] + [torch.zeros(B, d) for _ in range(3)]
    # both layers read one weight tensor (k + d == d + d is not needed: a view per layer)
    w2 = torch.zeros(4 * d, 2 * d)
    ops.lstm_stream(x, h, h, [w, w2], [None, None], [0, 0], h.clone(), h.clone(), *scratch)


@pytest.mark.parametrize("op,args", [
    ("lstm_step", lambda: _lstm_step()[0][:1] + [torch.zeros(3, 4, 1)] + _lstm_step()[0][2:]),
    ("gru_step", lambda: [torch.zeros(3, 8)] * 2 + [torch.zeros(4)] + [torch.zeros(3, 4)] * 5),
])  # fmt: skip
def test_wrong_ranks_get_a_named_error_not_an_unpacking_one(op, args):
    with pytest.raises(KernelArgumentError, match=r"must be a 2-D tensor, got shape"):
        getattr(ops, op)(*args(), 0)


@needs_native
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every count is 1")
@pytest.mark.skipif(not native.torch_uses_gomp(), reason="the kernels are built without OpenMP")
def test_a_worker_thread_runs_the_kernels_on_torchs_thread_count():
    lib = native.library()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    seen = []

    def work():
        args, s = _lstm_step(B=64)
        ops.lstm_step(*args, s)
        seen.append(int(lib.rrnn_max_threads()))

    try:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [1]  # a new thread's OpenMP default is every core


@needs_native
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every count is 1")
def test_rows_split_over_threads_give_the_numbers_of_one_thread():
    """The fused step splits the batch into one block of rows per thread (its
    transcendental passes run over whole blocks): any split must give the same
    numbers, on the training step and on the inference loop."""
    from rrnn import RestrictedLSTM

    torch.manual_seed(0)
    m = RestrictedLSTM(12, 24, 2, sharing_rate=0.5)
    m.kernel = "shared-row"
    x = torch.randn(5, 67, 12)  # 67 rows: blocks of unequal size
    before = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                results.append(m(x)[0])
            results.append(m(x)[0].detach())
    finally:
        torch.set_num_threads(before)
    one_infer, one_train, two_infer, two_train = results
    torch.testing.assert_close(two_infer, one_infer, rtol=0, atol=1e-6)
    torch.testing.assert_close(two_train, one_train, rtol=0, atol=1e-6)


@needs_native
@pytest.mark.parametrize("input_size", [12, 24])  # the first layer unfolded, then folded too
def test_a_small_batch_split_over_threads_gives_the_numbers_of_one_thread(input_size):
    """A batch too small for a block of rows per thread runs each step on BLAS's
    threads and its fused step's rows split over the threads (rrnn_lstm_infer's split
    mode). Every split (2 and 3 threads, 1 to 20 rows) gives the one-thread numbers;
    many steps and calls, so that a missing synchronisation would have its chances
    to show (a step split by hidden units instead, tried on 2026-12-07, failed here
    with either of its barriers removed)."""
    from rrnn import RestrictedLSTM

    torch.manual_seed(0)
    m = RestrictedLSTM(input_size, 24, 3, sharing_rate=0.3)  # s = 7, q = 17: unequal shares
    m.kernel = "shared-row"
    before = torch.get_num_threads()
    try:
        for B in (1, 5, 20):
            x = torch.randn(40, B, input_size)
            torch.set_num_threads(1)
            with torch.no_grad():
                want = m(x)
            for n in (2, 3):
                torch.set_num_threads(n)
                for _ in range(5):
                    with torch.no_grad():
                        got = m(x)
                    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    finally:
        torch.set_num_threads(before)


def test_sizes_are_64_bit_on_every_platform():
    assert all(
        sig[0] is ctypes.c_int64 and ctypes.sizeof(sig[0]) == 8
        for sig in native.c_signatures(native.SOURCE.read_text()).values()
    )
    code = re.sub(r"/\*.*?\*/", "", native.SOURCE.read_text(), flags=re.S)  # no comments
    assert not re.search(r"\blong\b", code), "a C long is 32 bits on Windows"


@pytest.mark.skipif(native._compiler() is None, reason="no C compiler here")
def test_a_fallback_build_is_cached_under_its_own_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "OPENMP", ["-fno-such-flag-rrnn"])
    monkeypatch.setattr(native, "torch_uses_gomp", lambda: True)
    built = native.build()
    files = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    failed = [f for f in files if f.endswith(".failed")]
    assert len(failed) == len(native.LIBS) and built.name in files  # both -fno-such-flag builds
    assert built.stem not in {f.removesuffix(".failed") for f in failed}  # its own flags' name
    calls = []
    real = native._compile
    monkeypatch.setattr(native, "_compile", lambda *a: calls.append(a) or real(*a))
    assert native.build() == built and calls == []  # found again, nothing recompiled


@pytest.mark.parametrize("input_size", [7, 24])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_inference_reuses_only_buffers_it_made(bidirectional, input_size):
    """Without autograd the shared-row LSTM writes a layer's output over its input
    from the second layer on, and the layers share one x P_x^T buffer: the caller's
    input and state stay untouched, and every layer's h_n and c_n equal the path
    autograd records (which keeps every buffer). With input_size = hidden_size the
    first layer folds too, reading x_t where it writes h_t: in a copy, never in the
    caller's x."""
    from rrnn.modules import RestrictedLSTM

    torch.manual_seed(0)
    lstm = RestrictedLSTM(input_size, 24, 3, sharing_rate=0.5, bidirectional=bidirectional)
    lstm.kernel = "shared-row"
    dirs = 2 if bidirectional else 1
    x, h0, c0 = torch.randn(6, 5, input_size), torch.randn(3 * dirs, 5, 24), torch.randn(3 * dirs, 5, 24)
    kept = [t.clone() for t in (x, h0, c0)]
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x, (h0, c0))
    for t, k in zip((x, h0, c0), kept):
        assert torch.equal(t, k)
    want, (want_h, want_c) = lstm(x.requires_grad_(), (h0, c0))  # the autograd path
    torch.testing.assert_close(out, want.detach())
    torch.testing.assert_close(h_n, want_h.detach())
    torch.testing.assert_close(c_n, want_c.detach())


def test_a_frozen_first_layer_keeps_the_gradients_of_the_others():
    """A stack whose first layer is frozen runs that layer without autograd (an
    output buffer the call made) and the others with it: the gradients of the
    trainable layers equal the reference path's."""
    from rrnn.modules import RestrictedLSTM

    torch.manual_seed(0)
    lstm = RestrictedLSTM(7, 24, 3, sharing_rate=0.5)
    for name, p in lstm.named_parameters():
        p.requires_grad_(not name.endswith("_l0"))
    x = torch.randn(6, 5, 7)
    grads = {}
    for path in ("shared-row", "reference"):
        lstm.kernel = path
        lstm.zero_grad(set_to_none=True)
        out, (h_n, c_n) = lstm(x)
        (out.square().sum() + h_n.sum() + c_n.sum()).backward()
        grads[path] = {n: p.grad.clone() for n, p in lstm.named_parameters() if p.requires_grad}
    assert grads["shared-row"].keys() == grads["reference"].keys() and grads["reference"]
    for name, g in grads["reference"].items():
        torch.testing.assert_close(grads["shared-row"][name], g, msg=name)
