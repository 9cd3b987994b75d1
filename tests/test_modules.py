"""Restricted layers against torch.nn given identical weights: outputs and gradients."""

import copy
import io
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rrnn
from rrnn import restriction as R

LAYER = {"rnn": rrnn.RestrictedRNN, "gru": rrnn.RestrictedGRU, "lstm": rrnn.RestrictedLSTM}
CELL = {
    "rnn": rrnn.RestrictedRNNCell,
    "gru": rrnn.RestrictedGRUCell,
    "lstm": rrnn.RestrictedLSTMCell,
}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
RATES = [0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1, 0.33, 0.999]
SHAPES = [  # (input_size, hidden_size, num_layers, bidirectional)
    (5, 5, 1, False),
    (3, 6, 2, True),
    (9, 4, 3, False),
    (4, 7, 3, True),
]
F64 = torch.float64


def run(module, x, hx=None):
    out, hidden = module(x, hx)
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    return out, states


def loss_of(out, states):
    # weight every element differently so that no gradient hides behind symmetry
    total = 0
    for t in (out, *states):
        w = torch.linspace(-1, 1, t.numel(), dtype=t.dtype).reshape(t.shape)
        total = total + (w * t).sum() + (t**2).sum() * 0.1
    return total


def make_state(mode, layers, dirs, batch, hidden, requires_grad=True):
    shape = (layers * dirs, batch, hidden)
    states = [torch.randn(shape, dtype=F64, requires_grad=requires_grad)]
    if mode == "lstm":
        states.append(torch.randn(shape, dtype=F64, requires_grad=requires_grad))
    return states


def compact_grads_to_pool(module, layer, direction):
    """The compact parameters' gradients laid out as a pool, via a clone whose
    parameter values are the gradients."""
    clone = copy.deepcopy(module)
    with torch.no_grad():
        for p, q in zip(clone.parameters(), module.parameters()):
            p.copy_(q.grad if q.grad is not None else torch.zeros_like(q))
    return clone.pool(layer, direction)


def independent_pool_rows(mode, d, rate_table, i):
    """Rows of the pool feeding input i's full matrix, from the layout in the
    issue: shared rows first, then private rows of (x, g0..), then (h, g0..)."""
    n = GATES[mode]
    s = [[int(torch.round(torch.tensor(r * d, dtype=F64))) for r in row] for row in rate_table]
    s_r = max(max(row) for row in s)
    q = [[d - v for v in row] for row in s]
    offset = s_r + sum(q[0]) * i
    rows = []
    for j in range(n):
        rows += list(range(s[i][j])) + list(range(offset, offset + q[i][j]))
        offset += q[i][j]
    return rows


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_to_torch_outputs_and_gradients(mode, rate, shape):
    k, d, layers, bidir = shape
    dirs = 2 if bidir else 1
    m = LAYER[mode](k, d, layers, bidirectional=bidir, sharing_rate=rate, dtype=F64)
    ref = m.to_torch()
    x = torch.randn(6, 3, k, dtype=F64, requires_grad=True)
    hx = make_state(mode, layers, dirs, 3, d)
    hx_arg = tuple(hx) if mode == "lstm" else hx[0]

    out, states = run(m, x, hx_arg)
    loss_of(out, states).backward()
    grads_x = [x.grad.clone()] + [h.grad.clone() for h in hx]
    x.grad = None
    for h in hx:
        h.grad = None
    out_ref, states_ref = run(ref, x, hx_arg)
    loss_of(out_ref, states_ref).backward()

    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(states, states_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_x, [x.grad] + [h.grad for h in hx]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    # every weight gradient: the compact gradient is the sum of the full
    # gradients over all rows that read each compact entry
    table = [[rate] * GATES[mode]] * 2
    for layer in range(layers):
        for direction, sfx in enumerate(["", "_reverse"][:dirs]):
            g_pool, gb_pool = compact_grads_to_pool(m, layer, direction)
            expect = torch.zeros_like(g_pool)
            expect_b = torch.zeros_like(gb_pool)
            for i, tag in enumerate(["ih", "hh"]):
                rows = torch.tensor(independent_pool_rows(mode, d, table, i))
                g_full = getattr(ref, f"weight_{tag}_l{layer}{sfx}").grad
                expect[:, : g_full.shape[1]].index_add_(0, rows, g_full)
                expect_b.index_add_(0, rows, getattr(ref, f"bias_{tag}_l{layer}{sfx}").grad)
            torch.testing.assert_close(g_pool, expect, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(gb_pool, expect_b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bias", [True, False])
def test_rate_zero_is_torch_nn_with_same_weights(mode, bias):
    k, d, layers = 4, 6, 2
    torch_cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[mode]
    plain = torch_cls(k, d, layers, bias=bias, bidirectional=True, dtype=F64)
    m = LAYER[mode](k, d, layers, bias=bias, bidirectional=True, sharing_rate=0.0, dtype=F64)
    # at r = 0 the private rows, gate after gate, are the torch.nn weights
    with torch.no_grad():
        for layer in range(layers):
            for sfx in ["", "_reverse"]:
                for tag in ["ih", "hh"]:
                    getattr(m, f"weight_{tag}_private_l{layer}{sfx}").copy_(
                        getattr(plain, f"weight_{tag}_l{layer}{sfx}")
                    )
                    if bias:
                        getattr(m, f"bias_{tag}_private_l{layer}{sfx}").copy_(
                            getattr(plain, f"bias_{tag}_l{layer}{sfx}")
                        )
    assert m.num_parameters() == sum(p.numel() for p in plain.parameters())
    x = torch.randn(5, 2, k, dtype=F64)
    fast_out, _ = run(m, x)  # whatever path auto takes: equal up to rounding
    torch.testing.assert_close(fast_out, run(plain, x)[0], rtol=1e-12, atol=1e-12)
    m.kernel = "reference"  # bit for bit: the same fused kernel on the same weights
    out, states = run(m, x)
    out_ref, states_ref = run(plain, x)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    for a, b in zip(states, states_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(
    "table_fn",
    [
        lambda n: [[0.5] * n, [0.5] * n],
        lambda n: [[(j + 1) / (n + 1) for j in range(n)], [0.25] * n],  # x reads more
        lambda n: [[0.0] * n, [1.0] * n],  # h reads more, tail owned by h
        lambda n: [[1.0] + [0.0] * (n - 1), [0.3] * n],
    ],
)
@pytest.mark.parametrize("k", [3, 8])
def test_load_pool_matches_independent_gather(mode, table_fn, k):
    n, d = GATES[mode], 6
    table = table_fn(n)
    m = LAYER[mode](k, d, 2, sharing_rate=table, dtype=F64)
    for layer in range(2):
        res = m.restrictions[layer]
        k_x = res.input_size
        weight = torch.randn(res.d_r, res.k_r, dtype=F64)
        bias = torch.randn(res.d_r, dtype=F64)
        m.load_pool(layer, weight, bias)
        w_ih, w_hh, b_ih, b_hh = m.layer_weights(layer)
        for i, (w, b, k_i) in enumerate([(w_ih, b_ih, k_x), (w_hh, b_hh, d)]):
            rows = independent_pool_rows(mode, d, table, i)
            torch.testing.assert_close(w, weight[rows, :k_i], rtol=0, atol=0)
            torch.testing.assert_close(b, bias[rows], rtol=0, atol=0)
        # pool() gives back the entries some matrix reads and zero elsewhere
        got_w, got_b = m.pool(layer)
        used = torch.zeros_like(weight, dtype=torch.bool)
        for i, k_i in enumerate([k_x, d]):
            used[independent_pool_rows(mode, d, table, i), :k_i] = True
        torch.testing.assert_close(got_w, torch.where(used, weight, 0.0), rtol=0, atol=0)
        torch.testing.assert_close(got_b, bias, rtol=0, atol=0)
        # number of used entries == parameters of that layer (no placeholders)
        assert int(used.sum()) + res.d_r == res.num_parameters()
    assert m.num_parameters() == R.count_parameters(mode, k, d, 2, table)
    # and the module agrees with torch.nn built from those gathered weights
    x = torch.randn(4, 2, k, dtype=F64)
    torch.testing.assert_close(run(m, x)[0], run(m.to_torch(), x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_full_sharing_ties_inputs_and_gates(mode):
    n, d = GATES[mode], 5
    m = LAYER[mode](d, d, 1, sharing_rate=1.0, dtype=F64)
    w_ih, w_hh, b_ih, b_hh = m.layer_weights(0)
    torch.testing.assert_close(w_ih, w_hh, rtol=0, atol=0)
    torch.testing.assert_close(b_ih, b_hh, rtol=0, atol=0)
    gates = w_ih.view(n, d, d)
    for j in range(1, n):
        torch.testing.assert_close(gates[j], gates[0], rtol=0, atol=0)
    assert m.num_parameters() == d * (d + 1)


@pytest.mark.parametrize("mode", ["gru", "lstm"])
def test_shared_row_gradient_is_sum_over_matrices(mode):
    n, d, k = GATES[mode], 4, 4
    m = LAYER[mode](k, d, 1, sharing_rate=0.5, dtype=F64)
    ws = m.weight_shared_l0
    w_ih, w_hh, b_ih, b_hh = m.layer_weights(0)
    g_ih, g_hh = torch.randn_like(w_ih), torch.randn_like(w_hh)
    torch.autograd.backward([w_ih, w_hh], [g_ih, g_hh])
    s = 2
    expect = sum(g_ih.view(n, d, k)[j, :s] + g_hh.view(n, d, d)[j, :s] for j in range(n))
    torch.testing.assert_close(ws.grad, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_gradcheck(mode):
    m = LAYER[mode](
        3,
        4,
        2,
        sharing_rate=[0.5, [[0.25] * GATES[mode], [0.75] * GATES[mode]]],
        bidirectional=True,
        dtype=F64,
    )
    x = torch.randn(3, 2, 3, dtype=F64, requires_grad=True)
    params = list(m.parameters())
    names = [name for name, _ in m.named_parameters()]

    def f(x, *ps):
        out, _ = torch.func.functional_call(m, dict(zip(names, ps)), (x,))
        return out

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_cells_match_torch_cells(mode):
    for rate in [0.0, 0.5, 1.0, 0.33]:
        cell = CELL[mode](5, 4, sharing_rate=rate, dtype=F64)
        ref = cell.to_torch()
        x = torch.randn(3, 5, dtype=F64, requires_grad=True)
        h = torch.randn(3, 4, dtype=F64)
        hx = (h, torch.randn(3, 4, dtype=F64)) if mode == "lstm" else h
        out, out_ref = cell(x, hx), ref(x, hx)
        outs = out if mode == "lstm" else (out,)
        outs_ref = out_ref if mode == "lstm" else (out_ref,)
        for a, b in zip(outs, outs_ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        (gx,) = torch.autograd.grad(sum(o.sum() for o in outs), x)
        (gx_ref,) = torch.autograd.grad(sum(o.sum() for o in outs_ref), x)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
        # unbatched
        single = cell(x[0].detach(), None)
        single_ref = ref(x[0].detach(), None)
        for a, b in zip(
            single if mode == "lstm" else (single,), single_ref if mode == "lstm" else (single_ref,)
        ):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert cell.num_parameters() == R.count_parameters(mode, 5, 4, 1, rate)


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_packed_batch_first_unbatched_and_dropout(mode):
    k, d = 3, 5
    m = LAYER[mode](k, d, 2, batch_first=True, bidirectional=True, sharing_rate=0.5, dtype=F64)
    ref = m.to_torch()
    x = torch.randn(4, 6, k, dtype=F64)
    lengths = torch.tensor([3, 6, 1, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    hx = make_state(mode, 2, 2, 4, d, requires_grad=False)
    hx_arg = tuple(hx) if mode == "lstm" else hx[0]
    out, states = run(m, packed, hx_arg)
    out_ref, states_ref = run(ref, packed, hx_arg)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    torch.testing.assert_close(
        pad_packed_sequence(out, batch_first=True)[0],
        pad_packed_sequence(out_ref, batch_first=True)[0],
    )
    for a, b in zip(states, states_ref):
        torch.testing.assert_close(a, b)
    # unbatched 2-D input with a 2-D state
    h1 = tuple(h[:, 0] for h in hx)
    out1, states1 = run(m, x[0], h1 if mode == "lstm" else h1[0])
    out1_ref, states1_ref = run(ref, x[0], h1 if mode == "lstm" else h1[0])
    assert out1.shape == (6, 2 * d) and states1[0].shape == (4, d)
    torch.testing.assert_close(out1, out1_ref)
    # dropout between layers in training mode: the same random stream as torch.nn
    md = LAYER[mode](k, d, 3, dropout=0.5, sharing_rate=0.5, dtype=F64).train()
    refd = md.to_torch().train()
    torch.manual_seed(3)
    a = run(md, x.transpose(0, 1))[0]
    torch.manual_seed(3)
    b = run(refd, x.transpose(0, 1))[0]
    torch.testing.assert_close(a, b)
    md.eval()
    torch.testing.assert_close(
        run(md, x.transpose(0, 1))[0], run(refd.eval(), x.transpose(0, 1))[0]
    )


def test_state_dict_holds_compact_parameters_and_round_trips():
    m = rrnn.RestrictedLSTM(200, 200, 3, sharing_rate=0.5)
    sd = m.state_dict()
    assert sum(t.numel() for t in sd.values()) == R.count_parameters("lstm", 200, 200, 3, 0.5)
    buf, buf_plain = io.BytesIO(), io.BytesIO()
    torch.save(sd, buf)
    torch.save(m.to_torch().state_dict(), buf_plain)
    ratio = buf.tell() / buf_plain.tell()
    assert ratio == pytest.approx(R.compression_rate("lstm", 200, 200, 3, 0.5), abs=0.01)
    buf.seek(0)
    m2 = rrnn.RestrictedLSTM(200, 200, 3, sharing_rate=0.5)
    m2.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(4, 2, 200)
    torch.testing.assert_close(m(x)[0], m2(x)[0], rtol=0, atol=0)
    # a state dict from another sharing rate does not load silently
    with pytest.raises(RuntimeError, match="size mismatch"):
        rrnn.RestrictedLSTM(200, 200, 3, sharing_rate=0.3).load_state_dict(sd)


def test_repr_shows_rate_and_count():
    m = rrnn.RestrictedGRU(10, 20, 2, sharing_rate=0.5)
    text = repr(m)
    assert "sharing_rate=0.5" in text
    assert f"params={R.count_parameters('gru', 10, 20, 2, 0.5):,}" in text
    assert "sharing_rate=0.25" in repr(rrnn.RestrictedLSTMCell(3, 4, sharing_rate=0.25))


def test_torch_compile_matches_eager():
    m = rrnn.RestrictedLSTM(4, 6, 2, sharing_rate=0.5)
    compiled = torch.compile(m, backend="aot_eager")
    x = torch.randn(5, 3, 4)
    out, (h, c) = compiled(x)
    out_e, (h_e, c_e) = m(x)
    torch.testing.assert_close(out, out_e)
    out.sum().backward()
    g = m.weight_shared_l0.grad.clone()
    m.zero_grad()
    out_e.sum().backward()
    torch.testing.assert_close(g, m.weight_shared_l0.grad)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_jit_script_gives_a_clear_error_and_export_works():
    # TorchScript is deprecated; torch 2.13 cannot script torch.nn.GRU either.
    m = rrnn.RestrictedGRU(3, 4, sharing_rate=0.5).eval()
    with pytest.raises(TypeError, match="torch.export"):
        torch.jit.script(m)
    x = torch.randn(2, 1, 3)
    exported = torch.export.export(m, (x,))
    torch.testing.assert_close(exported.module()(x)[0], m(x)[0])


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_bad_constructor_arguments(mode):
    cls = LAYER[mode]
    for bad, word in [(1.5, "1.5"), (-0.2, "-0.2"), (float("nan"), "nan")]:
        with pytest.raises(ValueError, match="sharing_rate") as info:
            cls(3, 4, sharing_rate=bad)
        assert word in str(info.value)
    with pytest.raises(ValueError, match=rf"sharing_rate.*\(2, {GATES[mode]}\)"):
        cls(3, 4, sharing_rate=[[0.5] * 5, [0.5] * 5])
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(ValueError, match="dropout"):
            cls(3, 4, 2, dropout=bad)
    with pytest.raises(ValueError, match="hidden_size"):
        cls(3, 0)
    with pytest.raises(ValueError, match="sharing_rate"):
        CELL[mode](3, 4, sharing_rate=2.0)
    with pytest.warns(UserWarning, match="num_layers=1"):
        cls(3, 4, 1, dropout=0.3)


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_bad_forward_inputs(mode):
    m = LAYER[mode](3, 4, 2, sharing_rate=0.5)
    with pytest.raises(RuntimeError, match=r"input_size. Expected 3, got 7"):
        m(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match="3-D"):
        m(torch.randn(5))
    bad = torch.zeros(1, 2, 4)  # needs 2 layers
    with pytest.raises(RuntimeError, match=r"h0 must have shape.*\(2, 2, 4\).*\(1, 2, 4\)"):
        m(torch.randn(5, 2, 3), (bad, bad) if mode == "lstm" else bad)
    cell = CELL[mode](3, 4, sharing_rate=0.5)
    with pytest.raises(RuntimeError, match="inconsistent input_size: got 5 expected 3"):
        cell(torch.randn(2, 5))
    with pytest.raises(RuntimeError, match=r"batch size 2 doesn't match hidden0 batch size 3"):
        h = torch.zeros(3, 4)
        cell(torch.randn(2, 3), (h, h) if mode == "lstm" else h)


def test_load_pool_rejects_wrong_shapes():
    m = rrnn.RestrictedLSTM(3, 4, sharing_rate=0.5)
    res = m.restrictions[0]
    with pytest.raises(ValueError, match=rf"\({res.d_r}, {res.k_r}\)"):
        m.load_pool(0, torch.zeros(res.d_r + 1, res.k_r), torch.zeros(res.d_r))
    with pytest.raises(ValueError, match="bias"):
        m.load_pool(0, torch.zeros(res.d_r, res.k_r), torch.zeros(3))
    with pytest.raises(ValueError, match="layer"):
        m.pool(1)


def test_lstm_proj_size_refused():
    with pytest.raises(ValueError, match="proj_size"):
        rrnn.RestrictedLSTM(3, 4, proj_size=2)


def test_no_warning_in_plain_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = rrnn.RestrictedLSTM(3, 4, 2, sharing_rate=0.5)
        m(torch.randn(2, 1, 3))
