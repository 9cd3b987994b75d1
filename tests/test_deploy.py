"""The export form of the restricted layers (rrnn.deploy): the layer's numbers,
only the compact blocks held, and exports that keep both (run on a second input)."""

import warnings

import pytest
import torch

import rrnn
from rrnn.deploy import CompactRNN, compact

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
    held = dict(form.named_buffers())
    weights = sum(t.numel() for n, t in held.items() if not n.startswith("bias"))
    layer_weights = sum(p.numel() for n, p in layer.named_parameters() if "bias" not in n)
    assert weights == layer_weights  # each shared row stored once, as in the layer
    assert sum(t.numel() for t in held.values()) <= layer.num_parameters()
    assert all(t.is_contiguous() for t in held.values())
    pointers = [t.data_ptr() for t in held.values() if t.numel()]
    assert len(set(pointers)) == len(pointers)  # copies, not views of one another
    assert not list(form.parameters())


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
