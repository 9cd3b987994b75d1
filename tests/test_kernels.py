"""Fast paths against the reference path: outputs and every gradient, dispatch,
dropout placement, streaming, and the fallback without a C compiler."""

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rrnn
from rrnn import kernels
from rrnn.kernels import native

F64 = torch.float64
RATES = [0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1, 0.33, 0.999]
SHAPES = [(5, 5, 1, False), (3, 6, 2, True), (9, 4, 3, False), (4, 7, 3, True)]


@pytest.fixture(params=["native", "torch-ops"])
def impl(request, monkeypatch):
    """Run a test with the fused C step and with its torch-op fallback."""
    native.reset()
    if request.param == "torch-ops":
        monkeypatch.setenv("RRNN_NATIVE", "0")
    else:
        monkeypatch.delenv("RRNN_NATIVE", raising=False)
        if native.library() is None:
            pytest.skip("no C compiler here")
    yield request.param
    native.reset()


def grads_of(module, x, hx, path):
    """Outputs, final states and every gradient of one call on ``path``. Two
    backward passes on purpose: gradients must accumulate, never alias (two
    parameters' .grad sharing one buffer doubled a bias gradient once)."""
    module.kernel = path
    for p in module.parameters():
        p.grad = None
    x = x.detach().clone().requires_grad_(True)
    states = tuple(h.detach().clone().requires_grad_(True) for h in hx)
    out, hidden = module(x, states if len(states) == 2 else states[0])
    finals = hidden if isinstance(hidden, tuple) else (hidden,)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (w * out).sum().backward(retain_graph=True)
    sum(f.sum() * 0.3 + (f**2).sum() * 0.2 for f in finals).backward()
    return [
        out.detach(),
        *[f.detach() for f in finals],
        x.grad,
        *[t.grad for t in states],
        *[_grad(p) for p in module.parameters()],
    ]


def _grad(p):
    # an empty parameter (0 shared rows at r = 0) may keep grad None
    if p.grad is None:
        assert p.numel() == 0, "a non-empty parameter got no gradient"
        return torch.zeros_like(p)
    return p.grad.clone()


LAYER = {"gru": rrnn.RestrictedGRU, "lstm": rrnn.RestrictedLSTM}


def states(mode, layers, batch, d, dtype=F64):
    n = 2 if mode == "lstm" else 1
    return tuple(torch.randn(layers, batch, d, dtype=dtype) for _ in range(n))


@pytest.mark.parametrize("mode", ["gru", "lstm"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("shape", SHAPES)
def test_shared_row_equals_reference(impl, mode, rate, shape):
    k, d, layers, bidir = shape
    dirs = 2 if bidir else 1
    m = LAYER[mode](k, d, layers, bidirectional=bidir, sharing_rate=rate, dtype=F64)
    x = torch.randn(6, 3, k, dtype=F64)
    hx = states(mode, layers * dirs, 3, d)
    fast = grads_of(m, x, hx, "shared-row")
    ref = grads_of(m, x, hx, "reference")
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mode", ["gru", "lstm"])
def test_shared_row_batch_first_and_float32(impl, mode):
    m = LAYER[mode](7, 5, 2, batch_first=True, sharing_rate=0.5)
    x = torch.randn(4, 9, 7)
    hx = states(mode, 2, 4, 5, torch.float32)
    for a, b in zip(grads_of(m, x, hx, "shared-row"), grads_of(m, x, hx, "reference"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dispatch():
    lstm = rrnn.RestrictedLSTM(4, 8, 2, sharing_rate=0.5)
    seq, step = torch.randn(5, 2, 4), torch.randn(1, 2, 4)
    assert lstm.path_for(seq) == "shared-row"  # training: autograd on
    with torch.no_grad():
        assert lstm.path_for(step) == "stream"
        assert lstm.path_for(seq) == "shared-row"  # 0.5 >= the inference threshold
        low = rrnn.RestrictedLSTM(4, 8, 2, sharing_rate=0.25)
        assert low.path_for(seq) == "reference"  # below it
    assert rrnn.RestrictedLSTM(4, 8, 2, sharing_rate=0.0).path_for(seq) == "reference"
    assert lstm.path_for(step) == "shared-row"  # one step, but gradients are needed
    assert lstm.path_for(step.requires_grad_()) == "shared-row"
    packed = pack_padded_sequence(torch.randn(5, 2, 4), torch.tensor([5, 3]))
    assert lstm.path_for(packed) == "reference"
    table = rrnn.RestrictedLSTM(4, 8, sharing_rate=[[0.5, 0.5, 0.25, 0.5], [0.5] * 4])
    assert table.path_for(seq) == "reference"
    assert rrnn.RestrictedGRU(4, 8, sharing_rate=0.0).path_for(seq) == "shared-row"
    # training on one step: measured thresholds of their own
    assert rrnn.RestrictedLSTM(4, 8, sharing_rate=0.0).path_for(step) == "shared-row"
    assert rrnn.RestrictedGRU(4, 8, sharing_rate=0.0).path_for(step) == "reference"
    assert rrnn.RestrictedGRU(4, 8, sharing_rate=0.5).path_for(step) == "shared-row"
    assert rrnn.RestrictedRNN(4, 8, sharing_rate=0.9).path_for(seq) == "reference"
    rnn = rrnn.RestrictedRNN(4, 8, sharing_rate=0.9)
    rnn.kernel = "shared-row"
    with pytest.raises(ValueError, match="RNN has one gate"):
        rnn(seq)
    lstm.kernel = "reference"
    assert lstm.path_for(seq) == "reference"
    lstm.kernel = "stream"
    with pytest.raises(ValueError, match="kernel='stream' cannot run this call.*autograd"):
        lstm(seq)
    table.kernel = "shared-row"
    with pytest.raises(ValueError, match="per-gate sharing-rate tables"):
        table(seq)
    with pytest.raises(ValueError, match="kernel must be one of"):
        lstm.kernel = "cuda-magic"


def test_packed_sequences_through_auto_equal_reference():
    m = rrnn.RestrictedLSTM(3, 5, 2, sharing_rate=0.5, dtype=F64)
    packed = pack_padded_sequence(torch.randn(6, 3, 3, dtype=F64), torch.tensor([6, 4, 2]))
    out, (h, _) = m(packed)
    out_ref, (h_ref, _) = m.to_torch()(packed)
    torch.testing.assert_close(out.data, out_ref.data)
    torch.testing.assert_close(h, h_ref)


def test_dropout_falls_between_layers_at_the_rate(monkeypatch):
    calls = []
    real = torch.nn.functional.dropout

    def spy(x, p, training=True, inplace=False):
        out = real(x, p, training, inplace)
        calls.append((tuple(x.shape), p, training, float((out == 0).float().mean())))
        return out

    monkeypatch.setattr(torch.nn.functional, "dropout", spy)  # what the paths call
    m = rrnn.RestrictedLSTM(6, 64, 3, dropout=0.3, bidirectional=True, sharing_rate=0.5).train()
    m.kernel = "shared-row"
    m(torch.randn(20, 16, 6))
    assert [c[:3] for c in calls] == [((20, 16, 128), 0.3, True)] * 2  # after layers 1 and 2
    for *_, zero_fraction in calls:
        assert zero_fraction == pytest.approx(0.3, abs=0.03)
    calls.clear()
    m.eval()
    out = m(torch.randn(20, 16, 6))[0]
    assert calls == []
    m.kernel = "reference"
    assert out.shape == (20, 16, 128)


ALL = {"rnn": rrnn.RestrictedRNN, **LAYER}


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("rate", [0.0, 0.5, [[0.5, 0.25, 0.5, 0.5][:1], [0.5]]])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_streaming_equals_sequence_forward(impl, mode, rate, batch_first, batch):
    if isinstance(rate, list):  # a per-gate table: full-row streaming
        n = {"rnn": 1, "gru": 3, "lstm": 4}[mode]
        rate = [[0.5] * n, [0.25] * n]
    m = ALL[mode](5, 6, 3, batch_first=batch_first, sharing_rate=rate, dtype=F64).eval()
    T = 7
    x = torch.randn(batch, T, 5, dtype=F64) if batch_first else torch.randn(T, batch, 5, dtype=F64)
    h0 = states(mode, 3, batch, 6)
    h0 = h0 if mode == "lstm" else h0[0]
    m.kernel = "reference"
    full, final = m(x, h0)
    m.kernel = "auto"
    # outside frozen(), auto streams the one-step calls of LSTMs and of GRUs with shared
    # rows at small batches (kernels.STREAM_MAX_BATCH; a plain RNN's stream step, packed
    # afresh per call, is slower than torch's fused RNN); the stream path itself is
    # tested on all of them
    auto = "reference" if mode == "rnn" or (mode == "gru" and rate == 0.0) else "stream"
    state, steps = h0, []
    with torch.no_grad():
        for t in range(T):
            token = x[:, t : t + 1] if batch_first else x[t : t + 1]
            m.kernel = "auto"
            assert m.path_for(token, state) == auto
            m.kernel = "stream"
            out, state = m(token, state)
            steps.append(out)
    streamed = torch.cat(steps, 1 if batch_first else 0)
    torch.testing.assert_close(streamed, full, rtol=1e-10, atol=1e-12)
    for a, b in zip(
        state if mode == "lstm" else (state,), final if mode == "lstm" else (final,), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_streaming_unbatched_and_bidirectional_step():
    m = rrnn.RestrictedLSTM(4, 5, 2, bidirectional=True, sharing_rate=0.5, dtype=F64).eval()
    x = torch.randn(1, 4, dtype=F64)  # unbatched single step
    with torch.no_grad():
        assert m.path_for(x) == "stream"
        out, (h, c) = m(x)
    ref_out, (ref_h, ref_c) = m.to_torch().eval()(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)
    torch.testing.assert_close(c, ref_c)


@pytest.mark.parametrize("rate", [0.5, 0.9, 1.0])
def test_streaming_folds_the_shared_rows_of_layers_as_wide_as_h(rate):
    """rrnn::lstm_stream computes a shared row as (x + h) S^T where x is as wide as
    h (layers after the first; here the first too with input_size = 16): s = 8, 14
    and 16 shared rows, in blocks of four and one by one, against torch.nn with the
    same weights over steps with a carried state."""
    for k in (16, 5):
        m = rrnn.RestrictedLSTM(k, 16, 3, sharing_rate=rate, dtype=F64).eval()
        ref = m.to_torch().eval()
        state = ref_state = None
        with torch.no_grad():
            for _ in range(3):
                x = torch.randn(1, 3, k, dtype=F64)
                m.kernel = "stream"
                out, state = m(x, state)
                ref_out, ref_state = ref(x, ref_state)
                torch.testing.assert_close(out, ref_out)
                torch.testing.assert_close(state, ref_state)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9, 1.0, [0.3, 0.8, 0.5]])
def test_gru_streaming_step_equals_torch(rate, bias):
    """rrnn::gru_stream (one call for the stack: both products in C, rows in blocks
    of four and one by one, then the fused cell) against torch.nn with the same
    weights, over steps with a carried state; a first layer narrower and one as
    wide as h, a batch of 1 and of 3."""
    for k, batch in ((16, 3), (5, 1)):
        m = rrnn.RestrictedGRU(k, 16, 3, sharing_rate=rate, bias=bias, dtype=F64).eval()
        m.kernel = "stream"  # r = 0 included, which auto may leave to torch's GRU
        ref = m.to_torch().eval()
        state = ref_state = None
        with torch.no_grad(), m.frozen():
            for _ in range(3):
                x = torch.randn(1, batch, k, dtype=F64)
                out, state = m(x, state)
                ref_out, ref_state = ref(x, ref_state)
                torch.testing.assert_close(out, ref_out)
                torch.testing.assert_close(state, ref_state)


def test_stream_cache_follows_parameter_updates():
    m = rrnn.RestrictedLSTM(4, 6, 2, sharing_rate=0.5).eval()
    x = torch.randn(1, 2, 4)
    with torch.no_grad():
        before = m(x)[0]
        m.weight_shared_l1.add_(0.5)  # in-place update, as an optimizer step
        after = m(x)[0]
        m.load_state_dict(rrnn.RestrictedLSTM(4, 6, 2, sharing_rate=0.5).state_dict())
        loaded = m(x)[0]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(loaded, m.to_torch().eval()(x)[0])


def test_fallback_without_compiler(monkeypatch):
    native.reset()
    monkeypatch.delenv("RRNN_NATIVE", raising=False)
    monkeypatch.setattr(native, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler found"):
        assert native.library() is None
    m = rrnn.RestrictedLSTM(3, 4, 2, sharing_rate=0.5, dtype=F64)
    m.kernel = "shared-row"
    x = torch.randn(5, 2, 3, dtype=F64)
    torch.testing.assert_close(m(x)[0], m.to_torch()(x)[0])
    native.reset()


def test_compile_fullgraph_fails_as_it_does_for_torch_nn():
    # the README's claim: the recurrent op is a graph break, as torch.nn's RNNs are to
    # dynamo; if a torch release compiles torch.nn.LSTM whole, this says to revisit it
    x = torch.randn(5, 3, 4)
    for m in (rrnn.RestrictedLSTM(4, 6, 2, sharing_rate=0.5), torch.nn.LSTM(4, 6, 2)):
        torch._dynamo.reset()
        with warnings.catch_warnings(), pytest.raises(torch._dynamo.exc.Unsupported):
            warnings.simplefilter("ignore")
            torch.compile(m, fullgraph=True, backend="aot_eager")(x)


@pytest.mark.parametrize("kernel", ["auto", "shared-row"])
def test_compile(kernel):
    # auto traces the reference path; a forced fast path runs eager inside the graph
    m = rrnn.RestrictedLSTM(4, 6, 2, sharing_rate=0.5)
    m.kernel = kernel
    compiled = torch.compile(m, backend="aot_eager")
    x = torch.randn(5, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compiled(x)[0]
    torch.testing.assert_close(out, m(x)[0])


def test_auto_streams_only_the_batches_where_streaming_was_measured_faster():
    cases = {rrnn.RestrictedLSTM: "lstm", rrnn.RestrictedGRU: "gru", rrnn.RestrictedRNN: None}
    with torch.no_grad():
        for cls, mode in cases.items():
            m = cls(4, 6, 2, sharing_rate=0.5).eval()
            limit = kernels.STREAM_MAX_BATCH.get(mode) if mode else None
            for batch in (1, 16, 17, 32, 33):
                streams = m.path_for(torch.randn(1, batch, 4)) == "stream"
                assert streams == (limit is not None and batch <= limit), (cls.__name__, batch)
            with m.frozen():  # the packed weights kept: streaming pays at every batch
                assert m.path_for(torch.randn(1, 64, 4)) == "stream"
            m.kernel = "stream"  # pinned, any batch still streams
            assert m.path_for(torch.randn(1, 64, 4)) == "stream"


def test_each_dispatch_rule_answers_on_its_own():
    """kernel="auto" is an ordered table of rules (rrnn.kernels.dispatch.AUTO_RULES),
    each a function of the call that answers (path, why) or passes."""
    from rrnn.kernels import dispatch as D

    lstm = rrnn.RestrictedLSTM(4, 8, 2, sharing_rate=0.5).eval()
    step = D.Call(lstm, torch.randn(1, 2, 4), None, 1, None, needs_grad=False, drops=False)
    seq = D.Call(lstm, torch.randn(5, 2, 4), None, 5, None, needs_grad=True, drops=False)
    assert D._stream(step)[0] == "stream" and D._stream(seq) is None
    assert D._compiling(step) is None and D._traced(step) is None and D._transformed(step) is None
    with torch.autocast("cpu"):
        assert D._autocast(step)[0] == "reference"
    assert D._autocast(step) is None
    gru = rrnn.RestrictedGRU(4, 8, 2, sharing_rate=0.0).eval()
    gru_step = D.Call(gru, step.data, None, 1, None, False, False)
    assert D._gru_step_without_sharing(gru_step)[0] == "reference"
    with gru.frozen(), torch.no_grad():  # packed once: the stack operator beats torch's GRU
        assert D._gru_step_without_sharing(gru_step) is None
        assert gru.path_for(step.data) == "stream"
    rnn = D.Call(rrnn.RestrictedRNN(4, 8, 2), seq.data, None, 5, None, True, False)
    assert D._no_shared_row(rnn)[0] == "reference" and D._no_shared_row(seq) is None
    path, why = D._static(seq)  # r = 0.5 against the LSTM's training threshold 0.15
    assert path == "shared-row" and "0.15" in why
    assert D.AUTO_RULES[-1] is D._static  # the last rule always answers
