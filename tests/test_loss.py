"""The chunked decoder + cross-entropy against F.cross_entropy(F.linear(...))."""

import pytest
import torch
import torch.nn.functional as F

from rrnn.lm.loss import linear_cross_entropy
from rrnn.lm.model import ModelConfig, RNNModel

from .cpu_features import skip_unless_torch_autocasts


def _data(n, h, v, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, dtype=dtype, generator=g).requires_grad_()
    w = (torch.randn(v, h, dtype=dtype, generator=g) * 0.3).requires_grad_()
    b = torch.randn(v, dtype=dtype, generator=g).requires_grad_() if bias else None
    y = torch.randint(v, (n,), generator=g)
    return x, w, b, y


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("n, v, chunk", [(35, 11, 4), (97, 1009, 32), (64, 7, 64), (5, 13, 512)])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients(dtype, tol, n, v, chunk, bias):
    x, w, b, y = _data(n, 6, v, dtype, bias)
    params = [x, w] + ([b] if bias else [])
    fused = linear_cross_entropy(x, w, b, y, chunk=chunk)
    ref = F.cross_entropy(F.linear(x, w, b), y)
    assert fused.dtype == ref.dtype
    torch.testing.assert_close(fused, ref, rtol=tol, atol=tol)
    g1 = torch.autograd.grad(fused * 1.7, params)
    g2 = torch.autograd.grad(ref * 1.7, params)
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c, rtol=tol, atol=tol)


def test_gradcheck():
    x, w, b, y = _data(9, 4, 6, torch.float64)
    assert torch.autograd.gradcheck(lambda x, w, b: linear_cross_entropy(x, w, b, y, chunk=4), (x, w, b))


def test_tied_language_model_gets_the_same_gradients():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, cell="lstm", sharing_rate=0.5, layers=2, embedding_size=8,
                      hidden_size=8, tie_weights=True)  # fmt: skip
    model = RNNModel(cfg).double()
    tokens = torch.randint(50, (7, 3))
    targets = torch.randint(50, (21,))
    hidden = model.init_hidden(3)
    loss, _ = model(tokens, hidden, targets=targets)
    g1 = torch.autograd.grad(loss, list(model.parameters()))
    logits, _ = model(tokens, hidden)
    ref = F.cross_entropy(logits, targets)
    g2 = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(loss, ref)
    assert model.decoder.weight is model.encoder.weight
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c)
    # the embedding's rows went in sparse, into the decoder's dense gradient: .grad is dense
    loss, _ = model(tokens, hidden, targets=targets)
    loss.backward()
    assert model.encoder.weight.grad.layout == torch.strided
    torch.testing.assert_close(model.encoder.weight.grad, g2[0])


def test_without_grad_it_computes_the_value_only():
    x, w, b, y = _data(40, 5, 30, torch.float32)
    with torch.no_grad():
        value = linear_cross_entropy(x, w, b, y, chunk=8)
    assert not value.requires_grad
    torch.testing.assert_close(value, F.cross_entropy(F.linear(x, w, b), y).detach())


def test_double_backward_raises():
    x, w, b, y = _data(10, 4, 6, torch.float64)
    loss = linear_cross_entropy(x, w, b, y)
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|double backward"):
        torch.autograd.grad(gx.sum(), w)


def test_under_autocast_it_is_torchs_pair():
    x, w, b, y = _data(10, 4, 6, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = linear_cross_entropy(x, w, b, y)
        c = F.cross_entropy(F.linear(x, w, b), y)
    assert a.dtype == c.dtype
    torch.testing.assert_close(a, c)


def test_a_language_model_under_autocast_takes_torchs_pair():
    """The recurrent stack hands bfloat16 rows to a float32 decoder under autocast:
    no dtype error, the same value as torch's pair."""
    skip_unless_torch_autocasts("lstm")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, cell="lstm", sharing_rate=0.5, layers=2, embedding_size=8,
                      hidden_size=8)  # fmt: skip
    model = RNNModel(cfg)
    tokens, targets = torch.randint(40, (5, 3)), torch.randint(40, (15,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model(tokens, model.init_hidden(3), targets=targets)
        logits, _ = model(tokens, model.init_hidden(3))
        ref = F.cross_entropy(logits, targets)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert model.decoder.weight.grad is not None


def test_a_bfloat16_model_without_autocast_takes_the_torch_op_rows():
    x, w, b, y = _data(9, 4, 30, torch.float32)
    xb, wb, bb = (t.detach().bfloat16().requires_grad_() for t in (x, w, b))
    fused = linear_cross_entropy(xb, wb, bb, y, chunk=4)
    ref = F.cross_entropy(F.linear(xb, wb, bb).float(), y)
    torch.testing.assert_close(fused.float(), ref, rtol=2e-2, atol=2e-2)


def test_chunks_are_balanced():
    """2800 rows at most 768 per chunk: four chunks of 700, not three of 768 and 496."""
    from rrnn.lm import loss as L

    seen = []
    real = L._softmax_xent_
    L._softmax_xent_ = lambda logits, *a: (seen.append(logits.shape[0]), real(logits, *a))
    try:
        x, w, b, y = _data(2800, 3, 5, torch.float32)
        L.linear_cross_entropy(x, w, b, y, chunk=768)
    finally:
        L._softmax_xent_ = real
    assert seen == [700, 700, 700, 700]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subnormal_rows_of_h_reach_the_gemms_as_zeros(dtype):
    """An LSTM unit whose output gate is shut (gate input below -87) emits subnormal
    h: 0.13% of the last layer's outputs in a PTB checkpoint. The decoder's GEMMs
    read each entry of h 10,000 times, and a subnormal operand made them 4.5x slower
    on an Intel Xeon, so the fused loss hands them h with those entries set to 0; the
    values and gradients stay F.cross_entropy's within rounding, and h itself is
    not changed."""
    from rrnn.lm import loss as L

    tiny = torch.finfo(dtype).tiny
    x, w, b, y = _data(40, 6, 50, dtype)
    with torch.no_grad():
        x[::3, 2] = tiny / 1024  # subnormal
        x[1, 4] = -tiny / 3
        x[2, 1] = 0.0
    before = x.detach().clone()
    seen = []
    real = L._GEMMs.__init__
    L._GEMMs.__init__ = lambda self, h, *a: (real(self, h, *a), seen.append(self.h))[0]
    try:
        fused = L.linear_cross_entropy(x, w, b, y, chunk=16)
    finally:
        L._GEMMs.__init__ = real
    (h,) = seen
    assert not ((h != 0) & (h.abs() < tiny)).any()
    assert torch.equal(h, torch.where(before.abs() < tiny, 0, before))  # nothing else moves
    assert torch.equal(x.detach(), before)
    ref = F.cross_entropy(F.linear(x, w, b), y)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(fused, ref, rtol=tol, atol=tol)
    for a, c in zip(torch.autograd.grad(fused, (x, w, b)), torch.autograd.grad(ref, (x, w, b))):
        torch.testing.assert_close(a, c, rtol=tol, atol=tol)


def test_without_subnormals_leaves_other_tensors_alone():
    from rrnn.lm.loss import without_subnormals

    clean = torch.tensor([1.0, 0.0, -2.0, float("nan"), float("inf")])
    assert without_subnormals(clean) is clean  # no copy where nothing is subnormal
    half = torch.tensor([1e-6, 1e-7], dtype=torch.float16)  # float16 subnormals: kept
    assert without_subnormals(half) is half
    mixed = torch.tensor([1e-40, float("nan"), 3.0])
    out = without_subnormals(mixed)
    assert out[0] == 0 and out[1].isnan() and out[2] == 3 and mixed[0] != 0


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(y=torch.tensor([0, 1, 99])), "outside"),
        (dict(y=torch.tensor([0, 1, -1])), "outside"),
        (dict(y=torch.tensor([0.0, 1.0, 2.0])), "int64"),
        (dict(chunk=0), "chunk must be a positive integer"),
        (dict(w=torch.randn(6, 5)), "weight"),
    ],
)
def test_bad_input(change, words):
    x, w, b, y = _data(3, 4, 6, torch.float32)
    args = dict(x=x, w=w, b=b, y=y, chunk=2)
    args.update(change)
    with pytest.raises(ValueError, match=words):
        linear_cross_entropy(args["x"], args["w"], args["b"], args["y"], args["chunk"])


def test_training_with_the_fused_loss_matches_torchs(tmp_path):
    from rrnn.lm import train as T

    from .lm_helpers import small_config, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    quiet = dict(log=lambda m: None, progress=False)
    a = T.train(small_config(corpus, loss="fused"), tmp_path / "fused", **quiet)
    b = T.train(small_config(corpus, loss="torch"), tmp_path / "torch", **quiet)
    for x, y in zip(a["history"], b["history"]):
        for key in ("train_ppl", "valid_ppl", "test_ppl"):
            assert x[key] == pytest.approx(y[key], rel=1e-4)
    # a run from before --loss existed resumes with F.cross_entropy
    assert T.TrainConfig.from_dict({"dataset": "ptb"}).loss == "torch"
    assert T.TrainConfig().loss == "fused"


def test_bf16_gemms_match_autocast_and_stay_float32():
    """precision="bf16": the three GEMMs on bfloat16 operands; the value and the
    gradients are float32 and as close to float32's as torch.autocast's pair."""
    x, w, b, y = _data(97, 16, 1009, torch.float32)
    params = [x, w, b]
    exact = linear_cross_entropy(x, w, b, y, chunk=32)
    g_exact = torch.autograd.grad(exact, params)
    low = linear_cross_entropy(x, w, b, y, chunk=32, precision="bf16")
    g_low = torch.autograd.grad(low, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = F.cross_entropy(F.linear(x, w, b), y)
    g_auto = torch.autograd.grad(auto, params)
    assert low.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g_low)
    assert low.item() != exact.item()  # bfloat16 rounding did happen
    err = lambda a, c: ((a - c).norm() / c.norm()).item()  # noqa: E731
    assert abs(low.item() - exact.item()) <= 2 * abs(auto.item() - exact.item()) + 1e-3
    for gl, ga, ge in zip(g_low, g_auto, g_exact):
        assert err(gl, ge) < 2e-2
        assert err(gl, ge) <= 2 * err(ga, ge) + 1e-6


def test_bf16_leaves_float64_exact_and_rejects_unknown_precisions():
    x, w, b, y = _data(20, 4, 30, torch.float64)
    torch.testing.assert_close(
        linear_cross_entropy(x, w, b, y, precision="bf16"), F.cross_entropy(F.linear(x, w, b), y),
        rtol=1e-12, atol=1e-12,
    )  # fmt: skip
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        linear_cross_entropy(x, w, b, y, precision="half")


def test_train_config_precision_checks(monkeypatch, tmp_path):
    from rrnn.lm import train as T

    from .lm_helpers import small_config, write_corpus

    with pytest.raises(ValueError, match="precision must be one of"):
        T.TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="needs --loss fused"):
        T.TrainConfig(precision="bf16", loss="torch")
    assert T.TrainConfig.from_dict({"dataset": "ptb"}).precision == "fp32"
    corpus = write_corpus(tmp_path / "corpus")
    monkeypatch.setattr(T, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="no bfloat16 instructions"):
        T.train(small_config(corpus, precision="bf16"), tmp_path / "run", log=lambda m: None,
                progress=False)  # fmt: skip
    assert not (tmp_path / "run").exists()  # refused before anything was written
    monkeypatch.setattr(T, "cpu_has_bf16", lambda: True)
    s = T.train(small_config(corpus, precision="bf16"), tmp_path / "run", log=lambda m: None,
                progress=False)  # fmt: skip
    assert s["status"] == "completed"
