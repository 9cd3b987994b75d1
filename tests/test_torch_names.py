"""torch.nn's weight names write through: the initialisation idioms of torch.nn
recipes (nn.init on m.weight_hh_l0, the forget-gate bias) change the layer."""

import warnings

import pytest
import torch
from torch import nn

import rrnn

H, S = 5, 2  # sharing_rate 0.4 of 5 rows: 2 shared


def _lstm(**kw):
    torch.manual_seed(0)
    return rrnn.RestrictedLSTM(4, H, 2, sharing_rate=0.4, **kw)


def test_the_forget_gate_bias_idiom_changes_the_private_rows():
    m = _lstm()
    m.bias_ih_l0.data[H + S : 2 * H] = 1.0  # the tensor dies before .data is written
    assert m.bias_ih_l0[H + S : 2 * H].tolist() == [1.0] * (H - S)
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(m(x)[0], m.to_torch()(x)[0])


def test_writing_shared_rows_takes_the_mean_and_says_so():
    m = _lstm()
    with pytest.warns(UserWarning, match=r"m.bias_ih_l0: bias_ih_l0, bias_hh_l0 now differ from what was written"):
        m.bias_ih_l0.data[H : 2 * H] = 1.0  # the forget gate's shared rows too
        m(torch.randn(1, 1, 4))  # applied here at the latest
    b_ih = m.bias_ih_l0.detach().view(4, H)
    assert b_ih[1, S:].tolist() == [1.0] * (H - S)
    assert torch.equal(b_ih[0, :S], b_ih[1, :S])  # every gate reads the shared entries


def test_nn_init_on_a_kept_reference_equals_from_torch_of_what_was_written():
    m = _lstm()
    ref = nn.LSTM(4, H, 2)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(getattr(m, name))
    w = m.weight_hh_l1  # kept: applied at the next forward
    with pytest.warns(UserWarning, match="weight_hh_l1"):
        nn.init.orthogonal_(w)
        with torch.no_grad():
            ref.weight_hh_l1.copy_(w)
        m(torch.randn(2, 1, 4))
    expected = rrnn.RestrictedLSTM.from_torch(ref, sharing_rate=0.4)
    for (name, a), b in zip(m.state_dict().items(), expected.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    g, written = m.weight_hh_l1.view(4, H, H), w.detach().view(4, H, H)
    torch.testing.assert_close(g[:, S:], written[:, S:])  # private rows: exactly as written


def test_a_write_reaches_state_dict_and_to_torch():
    m = _lstm()
    w = m.weight_ih_l0
    with torch.no_grad():
        w[4 * H - 1] = 7.0  # a private row of the output gate
    assert m.state_dict()["weight_ih_private_l0"][-1].eq(7.0).all()
    assert m.to_torch().weight_ih_l0[4 * H - 1].eq(7.0).all()


def test_reading_changes_nothing_and_keeps_its_gradient():
    m = _lstm()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = m.weight_hh_l0.pow(2).sum() + m.bias_hh_l1.sum()
        loss.backward()
        m(torch.randn(2, 1, 4))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert m.weight_shared_l0.grad is not None and m.weight_shared_l0.grad.abs().sum() > 0


def test_a_classical_layer_hands_out_its_parameters():
    m = rrnn.RestrictedGRU(4, H, sharing_rate=0.0)
    assert isinstance(m.weight_hh_l0, nn.Parameter)
    nn.init.zeros_(m.weight_hh_l0)
    assert m.weight_hh_private_l0.abs().sum() == 0


@pytest.mark.parametrize(
    "cls,kw",
    [(rrnn.RestrictedLSTM, dict(sharing_rate=[[0.4, 0.2, 0.6, 0.0], [0.2, 0.4, 0.0, 0.6]])),
     (rrnn.RestrictedGRU, dict(sharing_rate=[[0.4, 0.2, 0.6], [0.2, 0.4, 0.0]])),
     (rrnn.RestrictedGRU, dict(sharing_rate=0.6, bidirectional=True)),
     (rrnn.RestrictedRNN, dict(sharing_rate=1.0)),
     (rrnn.RestrictedLSTM, dict(sharing_rate=0.0))],
)  # fmt: skip
def test_set_layer_weights_of_a_layers_own_weights_is_exact(cls, kw):
    a, b = cls(4, H, 2, **kw), cls(4, H, 2, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing differs: no warning
        for layer in range(2):
            for d in range(a.num_directions):
                full = [t.detach().clone() for t in a.layer_weights(layer, d)]
                b.set_layer_weights(layer, *full, direction=d)
                for x, y in zip(full, b.layer_weights(layer, d)):
                    torch.testing.assert_close(y, x, rtol=0, atol=1e-7)


def test_set_layer_weights_refuses_wrong_shapes_and_missing_bias():
    m = _lstm()
    with pytest.raises(ValueError, match=r"weight_hh of layer 0 must have shape \(20, 5\)"):
        m.set_layer_weights(0, weight_hh=torch.zeros(20, 4))
    nobias = rrnn.RestrictedLSTM(4, H, sharing_rate=0.4, bias=False)
    with pytest.raises(ValueError, match="bias=False"):
        nobias.set_layer_weights(0, bias_ih=torch.zeros(4 * H))
