"""RestrictedX.from_torch and torch.nn's weight names on restricted layers."""

import pytest
import torch

import rrnn

PAIRS = [(rrnn.RestrictedRNN, torch.nn.RNN), (rrnn.RestrictedGRU, torch.nn.GRU),
         (rrnn.RestrictedLSTM, torch.nn.LSTM)]  # fmt: skip


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_from_torch_at_rate_0_is_the_same_layer(ours, theirs, bidirectional):
    torch.manual_seed(0)
    plain = theirs(6, 5, 2, bidirectional=bidirectional, batch_first=True).double()
    restricted = ours.from_torch(plain, sharing_rate=0.0)
    assert restricted.batch_first and restricted.bidirectional == bidirectional
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(restricted(x)[0], plain(x)[0], rtol=1e-12, atol=1e-12)
    for name, p in plain.named_parameters():  # torch.nn's names read the full matrices
        assert torch.equal(getattr(restricted, name), p), name


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_from_torch_averages_the_rows_it_shares_and_copies_the_rest(ours, theirs):
    torch.manual_seed(0)
    plain = theirs(7, 4, 1).double()  # input 7 > hidden 4: some shared columns only x reads
    r = ours.from_torch(plain, sharing_rate=0.5)
    s, n, d = 2, {"RNN": 1, "GRU": 3, "LSTM": 4}[theirs.__name__], 4
    gx = plain.weight_ih_l0.view(n, d, 7)
    gh = plain.weight_hh_l0.view(n, d, d)
    shared = r.weight_shared_l0  # (s, 7)
    torch.testing.assert_close(shared[:, :4], (gx[:, :s, :4].sum(0) + gh[:, :s].sum(0)) / (2 * n))
    torch.testing.assert_close(shared[:, 4:], gx[:, :s, 4:].mean(0))
    w_ih = r.weight_ih_l0.view(n, d, 7)
    assert torch.equal(w_ih[:, s:], gx[:, s:])  # private rows copied
    both = (plain.bias_ih_l0 + plain.bias_hh_l0).view(n, d)[:, :s].mean(0)
    torch.testing.assert_close(r.bias_shared_l0 * 2, both)


def test_from_torch_errors():
    with pytest.raises(TypeError, match="needs a LSTM"):
        rrnn.RestrictedLSTM.from_torch(torch.nn.GRU(3, 3))
    with pytest.raises(ValueError, match="proj_size"):
        rrnn.RestrictedLSTM.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="per-gate"):
        rrnn.RestrictedLSTM.from_torch(torch.nn.LSTM(3, 4), sharing_rate=[[0.5] * 4, [0.25] * 4])


def test_torch_weight_names_that_do_not_exist_still_raise():
    m = rrnn.RestrictedLSTM(3, 4, 2, bias=False)
    assert m.weight_hh_l1.shape == (16, 4)
    for name in ("weight_ih_l2", "weight_ih_l0_reverse", "bias_ih_l0", "nonsense"):
        with pytest.raises(AttributeError):
            getattr(m, name)
