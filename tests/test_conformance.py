"""torch's own module tests (``common_modules.module_db``) run against the restricted
layers and cells: every sample, float32 and float64, train and eval.

- At r = 0, with torch's weights copied in: outputs, input gradients and parameter
  gradients equal torch.nn's.
- At r = 0.5: equal to the layer's own ``to_torch()`` (outputs and input gradients).
- Every error input raises torch's exception class at the same stage.

Samples the layers cannot support (``proj_size``) are counted and must get a clear
ValueError that names ``proj_size``. One stricter check of ours: a non-bool ``bias``
(torch's cell error samples pass ``"relu"`` there) is a TypeError at construction.
"""

import pytest
import torch
from torch import nn

import rrnn

common_modules = pytest.importorskip(
    "torch.testing._internal.common_modules", reason="torch's module tests need expecttest"
)

OURS = {
    nn.RNN: rrnn.RestrictedRNN, nn.GRU: rrnn.RestrictedGRU, nn.LSTM: rrnn.RestrictedLSTM,
    nn.RNNCell: rrnn.RestrictedRNNCell, nn.GRUCell: rrnn.RestrictedGRUCell,
    nn.LSTMCell: rrnn.RestrictedLSTMCell,
}  # fmt: skip
INFOS = [m for m in common_modules.module_db if m.module_cls in OURS]
IDS = [m.module_cls.__name__ for m in INFOS]
CELLS = (nn.RNNCell, nn.GRUCell, nn.LSTMCell)


def _leaves(out):
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _clone(args):
    return torch.utils._pytree.tree_map(
        lambda t: t.detach().clone().requires_grad_(t.requires_grad)
        if isinstance(t, torch.Tensor) else t,
        args,
    )  # fmt: skip


def _copy_classical(theirs: nn.Module, ours: nn.Module) -> None:
    """At r = 0 our private rows are torch's matrices: copy them in by name."""
    cell = isinstance(theirs, CELLS)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            kind, _, where = name.partition("_l") if not cell else (name, "", "")
            ours_name = kind.replace("weight_", "weight_").replace("_ih", "_ih_private")
            ours_name = ours_name.replace("_hh", "_hh_private") + (f"_l{where}" if where else "")
            getattr(ours, ours_name).copy_(p)


def _run(module, args, kwargs):
    out = module(*args, **kwargs)
    sum(t.sum() for t in _leaves(out)).backward()
    grads = [t.grad for t in _leaves(args) if t.requires_grad]
    return _leaves(out), grads


def _samples(info, dtype, training):
    return list(info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                        training=training))  # fmt: skip


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_torchs_samples_agree_with_torch_nn(info, dtype, training):
    cls, unsupported, checked = OURS[info.module_cls], 0, 0
    for sample in _samples(info, dtype, training):
        cargs, ckw = sample.constructor_input.args, dict(sample.constructor_input.kwargs)
        if ckw.get("proj_size"):
            with pytest.raises(ValueError, match="proj_size"):
                cls(*cargs, **ckw, sharing_rate=0.0)
            unsupported += 1
            continue
        torch.manual_seed(0)
        theirs = info.module_cls(*cargs, **ckw).to(dtype).train(training)
        ours = cls(*cargs, **ckw, sharing_rate=0.0, dtype=dtype).train(training)
        _copy_classical(theirs, ours)
        fargs, fkw = sample.forward_input.args, sample.forward_input.kwargs
        out_t, grad_t = _run(theirs, _clone(fargs), fkw)
        out_o, grad_o = _run(ours, _clone(fargs), fkw)
        for a, b in zip(out_o + grad_o, out_t + grad_t, strict=True):
            torch.testing.assert_close(a, b)
        params_t = [p.grad for p in theirs.parameters()]
        params_o = [p.grad for p in ours.parameters()]
        for a, b in zip(params_o, params_t, strict=True):
            torch.testing.assert_close(a, b)
        # a restricted one at r = 0.5 against its own torch.nn form
        half = cls(*cargs, **ckw, sharing_rate=0.5, dtype=dtype).train(training)
        plain = half.to_torch().train(training)
        out_h, grad_h = _run(half, _clone(fargs), fkw)
        out_p, grad_p = _run(plain, _clone(fargs), fkw)
        for a, b in zip(out_h + grad_h, out_p + grad_p, strict=True):
            torch.testing.assert_close(a, b)
        checked += 1
    assert checked > 0
    if info.module_cls is nn.LSTM:
        assert unsupported > 0  # torch's samples include proj_size: refused, counted


@pytest.mark.parametrize("info", [i for i in INFOS if i.module_error_inputs_func], ids=lambda i: i.module_cls.__name__)
def test_torchs_error_inputs_raise_torchs_class_at_the_same_stage(info):
    cls = OURS[info.module_cls]
    errors = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                           requires_grad=True, training=True)  # fmt: skip
    seen = 0
    for err in errors:
        sample = err.module_error_input
        cargs, ckw = sample.constructor_input.args, sample.constructor_input.kwargs
        construction = err.error_on == common_modules.ModuleErrorEnum.CONSTRUCTION_ERROR
        if construction:
            with pytest.raises(err.error_type):
                cls(*cargs, **ckw, sharing_rate=0.5)
        elif len(cargs) > 2 and not isinstance(cargs[2], bool):
            # torch's cells take bias="relu" (a string where bias goes, truthy) and fail
            # later; ours refuse a non-bool bias at once, with torch's class for it
            with pytest.raises(TypeError, match="bias should be of type bool"):
                cls(*cargs, **ckw, sharing_rate=0.5)
        else:
            module = cls(*cargs, **ckw, sharing_rate=0.5)
            fargs, fkw = sample.forward_input.args, sample.forward_input.kwargs
            with pytest.raises(err.error_type):
                module(*fargs, **fkw)
        seen += 1
    assert seen > 0
