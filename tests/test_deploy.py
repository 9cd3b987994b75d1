"""The export form of the restricted layers (rrnn.deploy): the layer's numbers,
only the compact blocks held, and exports that keep both (run on a second input)."""

import warnings

import pytest
import torch

import rrnn
from rrnn.baselines.lowrank import LowRankRNN
from rrnn.deploy import CompactRNN, FactoredRNN, ProjectedLSTM, compact, export_form

CELLS = [rrnn.RestrictedLSTM, rrnn.RestrictedGRU, rrnn.RestrictedRNN]


def _state(cls, layers, batch, hidden, gen=torch.randn):
    h = gen(layers, batch, hidden)
    return (h, gen(layers, batch, hidden)) if cls is rrnn.RestrictedLSTM else h


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("sizes", [(5, 7), (9, 4), (6, 6)], ids=["k<d", "k>d", "k=d"])
def test_the_export_form_computes_the_layer(cls, rate, sizes):
    torch.manual_seed(0)
    k, d = sizes
    layer = cls(k, d, 2, sharing_rate=rate).eval()
    form = compact(layer)
    x, hx = torch.randn(4, 3, k), _state(cls, 2, 3, d)
    with torch.no_grad():
        for args in ((x,), (x, hx)):
            want, got = layer(*args), form(*args)
            torch.testing.assert_close(got[0], want[0])
            torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_the_export_form_takes_torch_nn_layouts(cls):
    torch.manual_seed(0)
    for kw in (dict(batch_first=True), dict(bias=False), dict(nonlinearity="relu")):
        if "nonlinearity" in kw and cls is not rrnn.RestrictedRNN:
            continue
        layer = cls(5, 6, 2, sharing_rate=0.5, **kw).eval()
        form = compact(layer)
        for x in (torch.randn(3, 4, 5), torch.randn(4, 5)):  # batched, unbatched
            with torch.no_grad():
                torch.testing.assert_close(form(x)[0], layer(x)[0])


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_only_the_compact_blocks_are_held(cls):
    layer = cls(16, 24, 3, sharing_rate=0.5)
    form = compact(layer)
    held = dict(form.named_parameters())
    weights = sum(t.numel() for n, t in held.items() if n.endswith("weight"))
    layer_weights = sum(p.numel() for n, p in layer.named_parameters() if "bias" not in n)
    assert weights == layer_weights  # each shared row stored once, as in the layer
    assert sum(t.numel() for t in held.values()) <= layer.num_parameters()
    assert all(t.is_contiguous() for t in held.values())
    pointers = [t.data_ptr() for t in held.values() if t.numel()]
    assert len(set(pointers)) == len(pointers)  # copies, not views of one another
    assert not any(t.requires_grad for t in held.values())  # frozen: inference only
    assert not list(form.buffers())


def test_what_has_no_export_form_says_what_to_export_instead():
    with pytest.raises(ValueError, match="bidirectional.*to_torch"):
        compact(rrnn.RestrictedLSTM(4, 4, bidirectional=True))
    table = [[0.5, 0.5, 0.5, 0.5], [0.5, 0.25, 0.5, 0.5]]
    with pytest.raises(ValueError, match="per-gate rate table.*to_torch"):
        compact(rrnn.RestrictedLSTM(4, 4, sharing_rate=table))
    with pytest.raises(TypeError, match="takes a RestrictedRNN/GRU/LSTM"):
        compact(torch.nn.LSTM(4, 4))
    assert isinstance(compact(rrnn.RestrictedGRU(4, 4)), CompactRNN)


# --- exported -------------------------------------------------------------------------
def _second_input(cls, T=3, B=2, k=6, d=8, layers=2):
    torch.manual_seed(1)
    return torch.randn(T, B, k), _state(cls, layers, B, d)


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "non-strict"])
def test_torch_export_of_the_form_runs_a_second_input(cls, strict):
    torch.manual_seed(0)
    layer = cls(6, 8, 2, sharing_rate=0.5).eval()
    form = compact(layer)
    example = (torch.randn(3, 2, 6), _state(cls, 2, 2, 8))
    program = torch.export.export(form, example, strict=strict)
    x, hx = _second_input(cls)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x, hx)[0], layer(x, hx)[0])


def _ort_session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(session, x, hx):
    flat = [x, *hx] if isinstance(hx, tuple) else [x, hx]
    return {i.name: t.numpy() for i, t in zip(session.get_inputs(), flat)}


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_onnx_export_of_the_form_runs_a_second_input_in_onnxruntime(cls, tmp_path):
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    layer = cls(6, 8, 2, sharing_rate=0.5).eval()
    example = (torch.randn(3, 2, 6), _state(cls, 2, 2, 8))
    path = tmp_path / "form.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(compact(layer), example, path, dynamo=True, verbose=False)
    session = _ort_session(path)
    x, hx = _second_input(cls)
    out = session.run(None, _feeds(session, x, hx))
    with torch.no_grad():
        want = layer(x, hx)
    torch.testing.assert_close(torch.from_numpy(out[0]), want[0])
    torch.testing.assert_close(torch.from_numpy(out[1]), want[1][0] if isinstance(want[1], tuple) else want[1])


def test_onnxruntime_holds_the_compact_size(tmp_path):
    """Weights held by ONNX Runtime after its optimiser ran, against torch.nn's LSTM
    exported the same way: the compression survives the runtime."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from rrnn.lm.export import held_bytes

    torch.manual_seed(0)
    layer = rrnn.RestrictedLSTM(32, 32, 2, sharing_rate=0.5).eval()
    example = (torch.randn(1, 2, 32), _state(rrnn.RestrictedLSTM, 2, 2, 32))
    held = {}
    for name, module in (("compact", compact(layer)), ("torch", layer.to_torch().eval())):
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, path, dynamo=True, verbose=False)
        held[name] = held_bytes(path)
    ratio = layer.num_parameters() / sum(p.numel() for p in layer.to_torch().parameters())
    assert held["compact"] / held["torch"] <= ratio * 1.02  # the layer's own ratio
    assert held["compact"] <= layer.num_parameters() * 4


# --- the compared methods' forms ------------------------------------------------------
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn", "relu"])
def test_the_low_rank_form_computes_the_stack_from_its_factors(mode):
    torch.manual_seed(0)
    kw = {"nonlinearity": "relu"} if mode == "relu" else {}
    stack = LowRankRNN("rnn" if mode == "relu" else mode, 5, 7, 2, rank=3, **kw).eval()
    form = export_form(stack)
    assert isinstance(form, FactoredRNN)
    x, h = torch.randn(4, 3, 5), torch.randn(2, 3, 7)
    hx = (h, torch.randn(2, 3, 7)) if mode == "lstm" else h
    with torch.no_grad():
        for args in ((x,), (x, hx)):
            want, got = stack(*args), form(*args)
            torch.testing.assert_close(got[0], want[0])
            torch.testing.assert_close(got[1], want[1])
    held = sum(p.numel() for n, p in form.named_parameters() if n.endswith("weight"))
    assert held == sum(p.numel() for n, p in stack.named_parameters() if "weight" in n)  # factors only


def test_the_projected_lstm_form_computes_torch_nn():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, 2, proj_size=3).eval()
    form = export_form(lstm)
    assert isinstance(form, ProjectedLSTM)
    x, hx = torch.randn(4, 3, 5), (torch.randn(2, 3, 3), torch.randn(2, 3, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "LSTM with projections is not supported with oneDNN"
        with torch.no_grad():
            for args in ((x,), (x, hx)):
                want, got = lstm(*args), form(*args)
                torch.testing.assert_close(got[0], want[0])
                torch.testing.assert_close(got[1], want[1])
    plain = torch.nn.GRU(5, 7)
    assert export_form(plain) is plain  # torch.nn's own layers export as they are


@pytest.mark.parametrize("build", ["factored", "projected"])
def test_the_compared_forms_run_a_second_input_in_onnxruntime(build, tmp_path):
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    if build == "factored":
        module, P = LowRankRNN("lstm", 6, 8, 2, rank=3).eval(), 8
    else:
        module, P = torch.nn.LSTM(6, 8, 2, proj_size=3).eval(), 3
    form = export_form(module)
    example = (torch.randn(3, 2, 6), (torch.randn(2, 2, P), torch.randn(2, 2, 8)))
    path = tmp_path / "form.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(form, example, path, dynamo=True, verbose=False)
    session = _ort_session(path)
    x, hx = torch.randn(3, 2, 6), (torch.randn(2, 2, P), torch.randn(2, 2, 8))  # new values
    out = session.run(None, _feeds(session, x, hx))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        want = module(x, hx)
    torch.testing.assert_close(torch.from_numpy(out[0]), want[0])


# --- int8 -----------------------------------------------------------------------------
def _quantize(module):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao's own
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        return torch.ao.quantization.quantize_dynamic(module)


def test_quantize_dynamic_warns_that_it_leaves_a_restricted_layer_in_float32():
    model = torch.nn.Sequential(rrnn.RestrictedLSTM(8, 8, 2), torch.nn.Linear(8, 4))
    cell = torch.nn.Sequential(rrnn.RestrictedGRUCell(8, 8))
    with pytest.warns(UserWarning, match=r"leaves RestrictedLSTM in float32.*deploy\.compact"):
        quantized = _quantize(model)
    with pytest.warns(UserWarning, match=r"leaves RestrictedGRUCell in float32.*to_torch"):
        _quantize(cell)
    assert isinstance(quantized[0], rrnn.RestrictedLSTM)  # what it did: nothing
    assert not hasattr(model[0], "qconfig")  # the original untouched, the attribute absent
    layer = rrnn.RestrictedLSTM(4, 4)
    layer.__dict__["_qconfig"] = None  # as set, without the warning
    del layer.qconfig
    with pytest.raises(AttributeError):
        del layer.qconfig


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_quantize_dynamic_quantizes_the_export_form(cls):
    torch.manual_seed(0)
    layer = cls(16, 24, 2, sharing_rate=0.5).eval()
    form = compact(layer)
    quantized = _quantize(form)
    int8 = torch.ao.nn.quantized.dynamic.Linear
    blocks = [m for m in quantized.modules() if isinstance(m, (torch.nn.Linear, int8))]
    assert blocks and all(isinstance(m, int8) for m in blocks)  # every block int8
    x = torch.randn(5, 3, 16)
    with torch.no_grad():
        want, got = layer(x)[0], quantized(x)[0]
    error = (got - want).abs().max().item()
    assert 0 < error < 0.05  # int8 rounding: small, and not zero (the blocks did change)


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_executorch_runs_the_form_on_a_second_input(cls):
    """Lowered with XNNPACK where ExecuTorch installs (pip install "rrnn[executorch]";
    not in the dev extra, so CI skips this): the program holds the compact blocks
    and computes the layer on an input it was not traced with."""
    pytest.importorskip("executorch.runtime")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    torch.manual_seed(0)
    layer = cls(6, 8, 2, sharing_rate=0.5).eval()
    example = (torch.randn(3, 2, 6), _state(cls, 2, 2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(compact(layer), example)
        buffer = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    loaded = Runtime.get().load_program(buffer)  # reads `buffer` in place: both stay alive
    method = loaded.load_method("forward")
    x, hx = _second_input(cls)
    out = method.execute([x, *hx] if isinstance(hx, tuple) else [x, hx])
    with torch.no_grad():
        want = layer(x, hx)
    torch.testing.assert_close(out[0], want[0])
