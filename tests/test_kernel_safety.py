"""The fast paths under ordinary PyTorch usage (issue 9's table): each case is
compared with the reference path or torch.nn, or asserts a clear error."""

import copy
import io
import pickle
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import rrnn
from rrnn.kernels import native

needs_native = pytest.mark.skipif(native.library() is None, reason="no C compiler here")
FAST = (rrnn.RestrictedGRU, rrnn.RestrictedLSTM)


def _state(cls, h):
    return (h, h.clone()) if cls is rrnn.RestrictedLSTM else h


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("cls", FAST)
def test_float64_input_or_state_on_a_float32_module_is_refused(cls):
    m = cls(20, 20, 2, sharing_rate=0.5)
    h = torch.zeros(2, 3, 20, dtype=torch.float64)
    with torch.no_grad(), pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match"):
        m(torch.randn(1, 3, 20, dtype=torch.float64), _state(cls, h))


def test_float64_state_alone_in_a_subprocess_is_an_error_not_a_crash():
    done = _run("""
        import torch, rrnn
        m = rrnn.RestrictedLSTM(20, 20, 2, sharing_rate=0.5)
        h = torch.zeros(2, 3, 20, dtype=torch.float64)
        try:
            with torch.no_grad():
                m(torch.randn(1, 3, 20), (h, h))
        except RuntimeError as err:
            print("refused:", err)
    """)
    assert done.returncode == 0, done.stderr  # SIGABRT before
    assert "refused: RestrictedLSTM: h0 dtype (torch.float64) does not match" in done.stdout


@needs_native
def test_loading_the_kernels_leaves_the_floating_point_state_alone():
    done = _run("""
        import numpy, torch, rrnn
        m = rrnn.RestrictedLSTM(20, 20, 2, sharing_rate=0.5)
        assert m.path_for(torch.randn(5, 3, 20)) == "shared-row"
        m(torch.randn(5, 3, 20))  # builds and loads the C kernels
        from rrnn.kernels import native
        assert native.library() is not None
        tiny = 1e-310
        print(tiny * 1.0 != 0.0, numpy.float64(tiny) * 1.0 != 0.0,
              torch.tensor(tiny, dtype=torch.float64).mul(1.0).item() != 0.0)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]  # no flush-to-zero


@needs_native
@pytest.mark.parametrize("cls", FAST)
@pytest.mark.parametrize("steps", [1, 6])
def test_a_nan_weight_gives_nan_as_on_the_reference_path(cls, steps):
    m = cls(10, 10, 2, sharing_rate=0.5)
    with torch.no_grad():
        m.weight_hh_private_l0[0, 0] = float("nan")
        x = torch.randn(steps, 3, 10)
        assert m.path_for(x) in ("stream", "shared-row")
        ours, ref = m(x)[0], m.to_torch()(x)[0]
    assert torch.equal(torch.isnan(ours), torch.isnan(ref)) and torch.isnan(ours).any()


@pytest.mark.parametrize("cls", FAST)
def test_double_backward_raises_instead_of_a_wrong_value(cls):
    m = cls(10, 10, 2, sharing_rate=0.5)
    x = torch.randn(5, 3, 10, requires_grad=True)
    assert m.path_for(x) == "shared-row"
    (g,) = torch.autograd.grad(m(x)[0].square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


@pytest.mark.parametrize("cls", FAST)
def test_torch_func_grad_and_vmap_work(cls):
    m = cls(10, 10, 2, sharing_rate=0.5)
    params = {k: v.detach() for k, v in m.named_parameters()}
    x = torch.randn(5, 3, 10)

    def loss(p):
        return torch.func.functional_call(m, p, (x,))[0].square().sum()

    grads = torch.func.grad(loss)(params)
    m(x)[0].square().sum().backward()
    for name, p in m.named_parameters():
        torch.testing.assert_close(grads[name], p.grad)
    ref = m.to_torch()
    try:  # vmap where torch.nn's own layer supports it (its GRU has no batching rule)
        expected = torch.func.vmap(lambda xi: ref(xi)[0], in_dims=1, out_dims=1)(x)
    except RuntimeError:
        return
    batched = torch.func.vmap(lambda xi: m(xi)[0], in_dims=1, out_dims=1)(x)
    torch.testing.assert_close(batched, expected)


@pytest.mark.parametrize("cls", FAST)
def test_training_mode_with_dropout_never_skips_dropout(cls):
    torch.manual_seed(0)
    m = cls(10, 10, 3, sharing_rate=0.5, dropout=0.5).train()
    x = torch.randn(1, 4, 10)
    with torch.no_grad():
        assert m.path_for(x) != "stream"
        samples = [m(x)[0] for _ in range(3)]  # MC-dropout sampling differs call to call
    assert not torch.equal(samples[0], samples[1])
    m.eval()
    with torch.no_grad():
        assert m.path_for(x) == "stream"


@pytest.mark.parametrize("cls", FAST)
def test_stream_outputs_do_not_alias_the_returned_state(cls):
    m = cls(10, 10, 2, sharing_rate=0.5)
    h0 = torch.randn(2, 3, 10)
    with torch.no_grad():
        out, state = m(torch.randn(1, 3, 10), _state(cls, h0))
        before = out.clone()
        (state[0] if isinstance(state, tuple) else state).zero_()
    assert torch.equal(out, before)


@pytest.mark.parametrize("cls", FAST)
def test_deepcopy_pickle_and_torch_save_after_a_streaming_call(cls):
    m = cls(10, 10, 2, sharing_rate=0.5)
    x = torch.randn(1, 3, 10)
    with torch.no_grad():
        expected = m(x)[0]  # fills the streaming cache
        copies = [copy.deepcopy(m), pickle.loads(pickle.dumps(m))]
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        copies.append(torch.load(buf, weights_only=False))
        for c in copies:
            assert c.stream_cache is not m.stream_cache
            torch.testing.assert_close(c(x)[0], expected, rtol=0, atol=0)
        # a copy's update never reaches the original through a shared cache
        copies[0].weight_shared_l0.add_(1.0)
        torch.testing.assert_close(m(x)[0], expected, rtol=0, atol=0)


@pytest.mark.parametrize("cls", FAST)
def test_two_threads_streaming_through_one_module(cls):
    m = cls(32, 32, 2, sharing_rate=0.5)
    inputs = [torch.randn(1, 2, 32) for _ in range(200)]
    with torch.no_grad():
        expected = [m.to_torch()(x)[0] for x in inputs]
    wrong = []

    def work():
        with torch.no_grad():
            for x, want in zip(inputs, expected):
                if not torch.allclose(m(x)[0], want, rtol=1e-5, atol=1e-6):
                    wrong.append(1)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


@pytest.mark.parametrize("cls", FAST)
@pytest.mark.parametrize(
    "update",
    ["data.add_", "data.copy_", "fused Adam", "no_grad add_"],
)
def test_every_kind_of_weight_update_reaches_the_streaming_path(cls, update):
    torch.manual_seed(0)
    m = cls(10, 10, 2, sharing_rate=0.5)
    x = torch.randn(1, 3, 10)
    with torch.no_grad():
        m(x)  # the streaming path has run once
    params = list(m.parameters())
    if update == "fused Adam":
        for p in params:
            p.grad = torch.ones_like(p)
        torch.optim.Adam(params, lr=0.1, fused=True).step()
    else:
        with torch.no_grad():
            for p in params:
                if update == "data.add_":
                    p.data.add_(0.5)
                elif update == "data.copy_":
                    p.data.copy_(p.data * -1.0)
                else:
                    p.add_(0.5)
    with torch.no_grad():
        assert m.path_for(x) == "stream"
        torch.testing.assert_close(m(x)[0], m.to_torch()(x)[0])


@pytest.mark.parametrize("cls", FAST)
def test_frozen_keeps_the_packed_weights_and_refuses_changes_inside(cls):
    m = cls(10, 10, 2, sharing_rate=0.5)
    x = torch.randn(1, 3, 10)
    with torch.no_grad(), m.frozen():
        first = m(x)[0]
        key = m.stream_cache.key
        assert key is not None and torch.equal(m(x)[0], first)
        assert m.stream_cache.key is key  # reused, not rebuilt
    assert m.stream_cache.key is None  # dropped on leaving
    with pytest.raises(RuntimeError, match="weights changed inside frozen"):
        with torch.no_grad(), m.frozen():
            m(x)
            next(m.parameters()).data.add_(1.0)
