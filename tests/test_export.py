"""Export routes record a graph that computes the layer, not the example's outputs:
each is run on a second input and compared with eager."""

import io
import warnings

import pytest
import torch

import rrnn

LAYERS = [rrnn.RestrictedRNN, rrnn.RestrictedGRU, rrnn.RestrictedLSTM]
CELLS = [rrnn.RestrictedRNNCell, rrnn.RestrictedGRUCell, rrnn.RestrictedLSTMCell]


def _build(cls):
    torch.manual_seed(0)
    if cls in CELLS:
        return cls(6, 5, sharing_rate=0.5).eval(), (3, 6)
    return cls(6, 5, 2, sharing_rate=0.5).eval(), None


def _inputs(cls, steps):
    shape = (3, 6) if cls in CELLS else (steps, 3, 6)
    return torch.randn(*shape), torch.randn(*shape)


def _leaves(out):
    return torch.cat([t.flatten() for t in torch.utils._pytree.tree_leaves(out)])


CASES = [(c, t) for c in LAYERS for t in (1, 4)] + [(c, None) for c in CELLS]
IDS = [f"{c.__name__}-T{t}" if t else c.__name__ for c, t in CASES]


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("cls,steps", CASES, ids=IDS)
def test_jit_trace_records_torchs_operators_and_runs_on_a_second_input(cls, steps, grad):
    m, _ = _build(cls)
    x, x2 = _inputs(cls, steps)
    with torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(m, (x,), check_trace=False)
        got, want = traced(x2), m(x2)
    torch.testing.assert_close(_leaves(got), _leaves(want))
    kinds = {n.kind() for n in traced.graph.nodes()}
    assert not any(k.startswith("rrnn::") for k in kinds), kinds  # no C kernel in the graph


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
@pytest.mark.parametrize("cls,steps", [(rrnn.RestrictedLSTM, 4), (rrnn.RestrictedGRU, 1)])
def test_torch_export_runs_on_a_second_input(cls, steps, strict):
    m, _ = _build(cls)
    x, x2 = _inputs(cls, steps)
    program = torch.export.export(m, (x,), strict=strict)
    with torch.no_grad():
        torch.testing.assert_close(_leaves(program.module()(x2)), _leaves(m(x2)))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("cls,steps", CASES, ids=IDS)
def test_onnx_export_into_onnxruntime_on_a_second_input(cls, steps, dynamo, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason='ONNX export tests need "rrnn[export]"')
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
        if cls in CELLS:
            pytest.skip("the dynamo exporter is slow: the layers cover it, cells use torchscript")
    m, _ = _build(cls)
    x, x2 = _inputs(cls, steps)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(m, (x,), str(path), dynamo=True, input_names=["x"])
            data = str(path)  # weights may lie beside it, in m.onnx.data
        else:
            buf = io.BytesIO()
            torch.onnx.export(m, (x,), buf, dynamo=False, input_names=["x"])
            data = buf.getvalue()
    session = ort.InferenceSession(data)
    names = [i.name for i in session.get_inputs()]
    assert names == ["x"], f"the graph must take the input, got inputs {names}"
    got = session.run(None, {"x": x2.numpy()})
    with torch.no_grad():
        want = torch.utils._pytree.tree_leaves(m(x2))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), w, rtol=1e-4, atol=1e-5)
