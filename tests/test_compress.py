"""The compared compression methods: low-rank, pruning, ISS, a smaller dense model."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from rrnn import count_parameters
from rrnn.baselines import (
    GradualPruner,
    ISSRegularizer,
    LowRankRNN,
    ProjectedRNN,
    compact,
    cubic_sparsity,
    dense_count,
    dense_hidden_for,
    group_entries,
    group_norms_sq,
    lowrank_count,
    narang_threshold,
    projected,
    projection_count,
    rank_for,
    sparse_weights,
    sparsity_for,
    stacked_count,
)
from rrnn.lm import train as T
from rrnn.lm.generate import evaluate_checkpoint, generate
from rrnn.lm.methods import compact_model

from .lm_helpers import epochs_without_time, small_config, write_corpus

QUIET = dict(log=lambda m: None, progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


def _count(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------
# Sizes, counted by hand
# ---------------------------------------------------------------------------
def test_counts_by_hand():
    # LSTM 3 x 200 on 200 inputs: 3 * (4*200*(200+200) + 2*4*200)
    assert dense_count("lstm", 200, 200, 3) == 3 * (4 * 200 * 400 + 1600) == 964_800
    assert dense_count("lstm", 200, 200, 3) == count_parameters("lstm", 200, 200, 3, 0.0)
    # rank 90 factors: per layer 90*(800+200) + 90*(800+200) + 1600
    assert lowrank_count("lstm", 200, 200, 3, 90) == 3 * (90 * 1000 * 2 + 1600) == 544_800
    # projection 82: layer 1 800*200 + 800*82 + 82*200 + 1600, then inputs of 82
    first = 800 * 200 + 800 * 82 + 82 * 200 + 1600
    later = 800 * 82 + 800 * 82 + 82 * 200 + 1600
    assert projection_count("lstm", 200, 200, 3, 82) == first + 2 * later == 542_000
    # widths 107, 139, 199 (GRU): 3*w*(k + w + 2) each
    gru = 3 * 107 * (200 + 107 + 2) + 3 * 139 * (107 + 139 + 2) + 3 * 199 * (139 + 199 + 2)
    assert stacked_count("gru", 200, [107, 139, 199]) == gru


def test_counts_equal_the_modules():
    for mode in ("rnn", "gru", "lstm"):
        assert _count(LowRankRNN(mode, 7, 9, 2, rank=3)) == lowrank_count(mode, 7, 9, 2, 3)
        assert _count(projected(mode, 7, 9, 2, rank=4)) == projection_count(mode, 7, 9, 2, 4)
        assert _count(nn.LSTM(7, 9, 2) if mode == "lstm" else nn.GRU(7, 9, 2) if mode == "gru"
                      else nn.RNN(7, 9, 2)) == dense_count(mode, 7, 9, 2)  # fmt: skip


def test_budget_sizes_meet_the_restricted_count():
    target = count_parameters("lstm", 200, 200, 3, 0.5)
    assert target == 542_700
    w = dense_hidden_for("lstm", 200, 3, target)
    assert w == 145  # 20 w^2 + 824 w: 539,980 at 145, 546,624 at 146
    assert abs(dense_count("lstm", 200, w, 3) - target) <= abs(
        dense_count("lstm", 200, w + 1, 3) - target
    )
    assert rank_for("lstm", 200, 200, 3, target) == 90
    assert rank_for("lstm", 200, 200, 3, target, "projection") == 82
    s = sparsity_for("lstm", 200, 200, 3, target)
    assert s == pytest.approx(1 - (target - 4800) / 960_000)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: LowRankRNN("lstm", 10, 20, rank=11), "rank 11 is too large"),
        (lambda: projected("gru", 10, 20, rank=20), "rank 20 is too large"),
        (
            lambda: GradualPruner(nn.LSTM(4, 4), sparsity=1.0, start=0, end=10),
            "sparsity must be in [0, 1)",
        ),
        (
            lambda: GradualPruner(nn.LSTM(4, 4), sparsity=-0.1, start=0, end=10),
            "sparsity must be in [0, 1)",
        ),
        (
            lambda: GradualPruner(nn.Linear(4, 4), sparsity=0.5, start=0, end=10),
            "no torch.nn RNN/GRU/LSTM",
        ),
        (lambda: GradualPruner(nn.LSTM(4, 4), 0.5, start=10, end=5), "start < end"),
        (lambda: sparsity_for("lstm", 200, 200, 3, 100), "outside"),
        (
            lambda: ISSRegularizer(nn.LSTM(4, 4, bidirectional=True), torch.zeros(3, 8), 1e-4),
            "unidirectional",
        ),
    ],
)
def test_bad_options_are_clear_errors(call, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace(")", r"\)")):
        call()


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"compress": "lowrank", "rank": 17}, "rank 17 is too large"),
        ({"compress": "prune", "sparsity": 1.5}, r"sparsity must be in \[0, 1\)"),
        ({"compress": "iss", "variant": "tied-dropout"}, "needs untied weights"),
        ({"compress": "dense", "rank": 4}, "--rank is an option of --compress lowrank"),
        ({"compress": "restrict", "target_params": 1000}, "sizes a compared method"),
        ({"compress": "zip"}, "compress must be one of"),
        ({"compress": "prune", "compress_end": 1.5}, "fractions of training"),
    ],
)
def test_bad_training_options(corpus, fields, words):
    with pytest.raises(ValueError, match=words):
        small_config(corpus, **fields)


def test_bad_cli_options_exit_2(corpus, capsys):
    from rrnn.cli import main

    code = main(["train", "--corpus", str(corpus), "--compress", "lowrank", "--rank", "500",
                 "--dry-run"])  # fmt: skip
    assert code == 2
    assert "rank 500 is too large" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Low rank
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_lowrank_equals_torch_with_the_products(mode):
    torch.manual_seed(0)
    m = LowRankRNN(mode, 6, 8, 2, rank=3).double()
    ref = m.to_dense().double()
    x = torch.randn(5, 3, 6, dtype=torch.float64, requires_grad=True)
    out, h = m(x)
    out2, h2 = ref(x)
    torch.testing.assert_close(out, out2)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g2,) = torch.autograd.grad(out2.sum(), x)
    torch.testing.assert_close(g, g2)
    # every product has rank <= 3
    for w in m.full_weights()[::4] + m.full_weights()[1::4]:
        assert torch.linalg.matrix_rank(w) <= 3
    assert torch.autograd.gradcheck(lambda x: m(x)[0], (x[:2, :2].detach().requires_grad_(),))


def test_projected_gru_is_a_gru_that_reads_its_projection():
    """One layer: nn.GRU with W_hh' = W_hh P gives h_t, and the output is P h_t;
    the second layer reads P_1 h, i.e. W_ih' = W_ih_2 P_1."""
    torch.manual_seed(1)
    m = ProjectedRNN("gru", 5, 7, 2, rank=3).double()
    ref = nn.GRU(5, 7, 2).double()
    with torch.no_grad():
        for l in range(2):
            P = getattr(m, f"weight_hr_l{l}")
            w_ih = getattr(m, f"weight_ih_l{l}")
            getattr(ref, f"weight_ih_l{l}").copy_(w_ih if l == 0 else w_ih @ m.weight_hr_l0)
            getattr(ref, f"weight_hh_l{l}").copy_(getattr(m, f"weight_hh_l{l}") @ P)
            getattr(ref, f"bias_ih_l{l}").copy_(getattr(m, f"bias_ih_l{l}"))
            getattr(ref, f"bias_hh_l{l}").copy_(getattr(m, f"bias_hh_l{l}"))
    x = torch.randn(6, 2, 5, dtype=torch.float64)
    h0 = torch.randn(2, 2, 7, dtype=torch.float64)
    out, h = m(x, h0)
    out2, h2 = ref(x, h0)
    torch.testing.assert_close(out, out2 @ m.weight_hr_l1.T)
    torch.testing.assert_close(h, h2)


# ---------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------
def test_narang_thresholds_by_hand():
    q, start, ramp, end, freq = 0.2, 100, 300, 700, 50
    theta = 2 * q * freq / (2 * (ramp - start) + 3 * (end - ramp))  # 20 / 1600 = 0.0125
    assert theta == pytest.approx(0.0125)
    assert narang_threshold(100, q, start, ramp, end, freq) == pytest.approx(0.0125 * 1 / 50)
    assert narang_threshold(250, q, start, ramp, end, freq) == pytest.approx(0.0125 * 151 / 50)
    # from the ramp on: (theta (ramp - start + 1) + 1.5 theta (itr - ramp + 1)) / freq
    assert narang_threshold(300, q, start, ramp, end, freq) == pytest.approx(
        (0.0125 * 201 + 0.01875 * 1) / 50
    )
    assert narang_threshold(700, q, start, ramp, end, freq) == pytest.approx(
        (0.0125 * 201 + 0.01875 * 401) / 50
    )
    # about q at the end; nothing outside [start, end] or off the frequency
    assert narang_threshold(700, q, start, ramp, end, freq) == pytest.approx(q, rel=0.01)
    assert narang_threshold(99, q, start, ramp, end, freq) is None
    assert narang_threshold(120, q, start, ramp, end, freq) is None
    assert narang_threshold(750, q, start, ramp, end, freq) is None


def test_cubic_sparsity_by_hand():
    assert cubic_sparsity(0, 0.8, 0, 100, 10) == 0.0
    assert cubic_sparsity(50, 0.8, 0, 100, 10) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(100, 0.8, 0, 100, 10) == pytest.approx(0.8)
    assert cubic_sparsity(55, 0.8, 0, 100, 10) is None


def _prune_loop(schedule, steps=60, sparsity=0.7):
    torch.manual_seed(0)
    model = nn.LSTM(6, 10, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    pruner = GradualPruner(model, sparsity, start=5, end=40, ramp=20, freq=5, schedule=schedule)
    x = torch.randn(7, 3, 6)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        model(x)[0].pow(2).sum().backward()
        opt.step()
        pruner.step()
        history.append({n: m.clone() for n, m in pruner.masks.items()})
        for name, (_, p) in pruner.params.items():  # masks stay applied after every step
            assert not p[~pruner.masks[name]].any()
    return model, pruner, history


@pytest.mark.parametrize("schedule", ["narang", "cubic"])
def test_masks_only_shrink_and_stay_applied(schedule):
    model, pruner, history = _prune_loop(schedule)
    for before, after in zip(history, history[1:]):
        for name in before:
            assert not (after[name] & ~before[name]).any()  # never un-pruned
    # history[i] is after iteration i: the last update is at end = 40, fixed after it
    assert all(torch.equal(history[40][n], history[-1][n]) for n in history[-1])
    assert any(not torch.equal(history[30][n], history[40][n]) for n in history[-1])
    assert not any(p.grad is None for p in model.parameters())
    biases = [p for n, p in model.named_parameters() if "bias" in n]
    assert all(bool((b != 0).all()) for b in biases)  # biases are never pruned
    if schedule == "cubic":
        for m in pruner.masks.values():
            assert m.sum() == round(0.3 * m.numel())  # exactly the target per matrix
    else:
        assert 0.3 < 1 - pruner.density() < 0.95  # near the target, not exactly


def test_narang_masks_weights_below_the_threshold():
    model, pruner, _ = _prune_loop("narang", steps=41)
    for kind, eps in pruner.thresholds.items():
        assert eps == pytest.approx(narang_threshold(40, pruner.q[kind], 5, 20, 40, 5), rel=1e-12)
        for name, (k, p) in pruner.params.items():
            if k == kind:
                assert (p.abs()[pruner.masks[name]] >= eps).all()


def test_sparse_product_equals_dense():
    model, pruner, _ = _prune_loop("cubic")
    for name, w in sparse_weights(model).items():
        dense = pruner.params[name][1].detach()
        assert w.layout == torch.sparse_csr
        assert w.values().numel() == int(torch.count_nonzero(dense))
        x_in = torch.randn(dense.size(1), 11)
        torch.testing.assert_close(torch.sparse.mm(w, x_in), dense @ x_in, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# ISS
# ---------------------------------------------------------------------------
def test_iss_group_entries():
    e = group_entries("lstm", 5, 2)
    assert e["rows"] == (2, 7, 12, 17) and e["hh_column"] == 2 and e["reader_column"] == 2
    assert group_entries("gru", 5, 4)["rows"] == (4, 9, 14)
    with pytest.raises(ValueError, match="outside"):
        group_entries("lstm", 5, 5)


def test_iss_group_norms_cover_exactly_the_group():
    """Setting every entry of unit k's group to 1 (and everything else to 0) gives
    a squared norm equal to the group's size; other units stay at 0."""
    rnn, reader = nn.LSTM(3, 5, 2), torch.zeros(7, 5)
    with torch.no_grad():
        for p in rnn.parameters():
            p.zero_()
        k, H = 2, 5
        rows = list(group_entries("lstm", H, k)["rows"])
        for n in ("weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"):
            getattr(rnn, n)[rows] = 1.0
        rnn.weight_hh_l1[:, k] = 1.0
        reader[:, k] = 1.0
    sq = group_norms_sq(rnn, reader)
    size = (
        4 * (5 + 5) + 8 + (20 - 4) + 7
    )  # rows of W_ih, W_hh; biases; W_hh column less overlap; reader
    assert sq[1][k].item() == size
    # groups overlap where a row of one unit crosses the column of another: every
    # other unit j of layer 1 holds W_hh[g*H+j, k] (its rows) and W_hh[g*H+k, j]
    # (its column), 8 ones; layer 0's unit j holds W_ih_l1[g*H+k, j], 4 ones
    others = [j for j in range(H) if j != k]
    assert sq[1][others].tolist() == [8.0] * 4
    assert sq[0].tolist() == [4.0] * 5
    reg = ISSRegularizer(rnn, reader, 1e-3)
    assert reg.group_sizes()[1] == size


def _trained_iss_lstm():
    torch.manual_seed(0)
    rnn, dec = nn.LSTM(4, 8, 3).double(), nn.Linear(8, 6).double()
    reg = ISSRegularizer(rnn, dec.weight, lam=1e-3)
    opt = torch.optim.SGD(list(rnn.parameters()) + list(dec.parameters()), lr=0.1)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        (dec(rnn(x)[0]).pow(2).mean() + reg.penalty()).backward()
        opt.step()
        reg.step()
    reg.cut(stacked_count("lstm", 4, [5, 6, 4]))
    return rnn, dec, reg, x


def test_iss_compacted_model_equals_the_masked_one_in_float64():
    rnn, dec, reg, x = _trained_iss_lstm()
    widths = reg.widths()
    assert stacked_count("lstm", 4, widths) <= stacked_count("lstm", 4, [5, 6, 4])
    assert sum(widths) < 24
    stack, reader, kept = compact(rnn, dec.weight)
    assert stack.widths == widths == [k.numel() for k in kept]
    out_big, _ = rnn(x)
    out_small, _ = stack(x)
    torch.testing.assert_close(out_small, out_big[..., kept[-1]], rtol=0, atol=1e-15)
    torch.testing.assert_close(out_small @ reader.T, out_big @ dec.weight.T, rtol=0, atol=1e-13)
    assert sum(p.numel() for p in stack.parameters()) == stacked_count("lstm", 4, widths)


def test_iss_penalty_is_the_group_lasso():
    rnn, reader = nn.LSTM(3, 4, 2).double(), torch.randn(5, 4, dtype=torch.float64)
    reg = ISSRegularizer(rnn, reader, lam=0.5)
    expected = 0.5 * sum(
        math.sqrt(v + 1e-8) for sq in group_norms_sq(rnn, reader) for v in sq.tolist()
    )
    assert reg.penalty().item() == pytest.approx(expected)
    # by brute force for unit 1 of layer 0: the set of entries, each counted once
    H, k = 4, 1
    rows = [g * H + k for g in range(4)]
    entries = {}
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        t = getattr(rnn, name)
        for r in rows:
            for idx in [r] if t.dim() == 1 else [(r, c) for c in range(t.size(1))]:
                entries[(name, idx if isinstance(idx, tuple) else (idx,))] = t[idx]
    for r in range(16):
        entries[("weight_hh_l0", (r, k))] = rnn.weight_hh_l0[r, k]
    for r in range(16):
        entries[("weight_ih_l1", (r, k))] = rnn.weight_ih_l1[r, k]
    brute = sum(float(v.detach()) ** 2 for v in entries.values())
    assert group_norms_sq(rnn, reader)[0][k].item() == pytest.approx(brute)


# ---------------------------------------------------------------------------
# In the language model: train, resume, eval, generate
# ---------------------------------------------------------------------------
METHODS = {
    "dense": {},
    "lowrank": {},
    "lowrank-projection": {"lowrank": "projection"},
    "prune": {"compress_start": 0.5, "prune_freq": 2},
    "prune-cubic": {"compress_start": 0.5, "prune_freq": 2, "prune_schedule": "cubic"},
    "iss": {"iss_lambda": 1e-3},
}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_evaluates_and_generates(tmp_path, corpus, name):
    fields = dict(METHODS[name], compress=name.split("-")[0], variant="plain")
    cfg = small_config(corpus, **fields)
    target = count_parameters("lstm", 16, 16, 2, 0.5)
    summary = T.train(cfg, tmp_path / "run", **QUIET)
    assert summary["status"] == "completed" and summary["compress"] == cfg.compress
    for key in ("rnn_params", "rnn_params_dense", "rnn_params_nonzero"):
        assert isinstance(summary[key], int)
    assert summary["rnn_params_nonzero"] <= summary["rnn_params_dense"]
    assert abs(summary["rnn_params"] - target) <= 0.1 * target, summary["rnn_params"]
    if name == "prune-cubic":
        assert summary["rnn_params"] == summary["rnn_params_nonzero"]
        assert summary["rnn_params"] == target  # the cubic schedule meets the budget exactly
    if name == "iss":
        assert stacked_count("lstm", 16, summary["widths"]) == summary["rnn_params"] <= target
    result = evaluate_checkpoint(tmp_path / "run" / "best.pt", log=lambda m: None)
    best = summary["history"][summary["best_epoch"] - 1]
    assert result["ppl"] == pytest.approx(best["test_ppl"], rel=1e-5)
    text = generate(tmp_path / "run" / "best.pt", words=5, seed=1)
    assert len(text.split()) + text.count("\n") >= 5  # <eos> is written as a line break


def test_iss_checkpoint_loads_as_the_compacted_model(tmp_path, corpus):
    cfg = small_config(corpus, compress="iss", variant="plain", iss_lambda=1e-3)
    summary = T.train(cfg, tmp_path / "run", **QUIET)
    ckpt = T.load_checkpoint(tmp_path / "run" / "best.pt")
    small = T.model_from_checkpoint(ckpt)
    assert small.config.widths == summary["widths"]
    assert small.rnn_parameters() == summary["rnn_params"] < summary["rnn_params_dense"]
    # and the compacted model gives the large masked one's numbers (double precision)
    from rrnn.lm.model import ModelConfig, RNNModel

    big = RNNModel(ModelConfig.from_dict(ckpt.model_config)).double()
    big.load_state_dict(ckpt.model)
    small = compact_model(big)
    tokens = torch.randint(0, big.config.vocab_size, (9, 3))
    a, _ = big.eval()(tokens, big.init_hidden(3))
    b, _ = small.eval()(tokens, small.init_hidden(3))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def _spawn_prune(corpus, out, epochs):
    cmd = [sys.executable, "-m", "rrnn.cli", "train", "--corpus", str(corpus), "--out", str(out),
           "--compress", "prune", "--variant", "plain", "--layers", "2", "--embedding-size", "32",
           "--hidden-size", "32", "--batch-size", "4", "--eval-batch-size", "4", "--bptt", "8",
           "--threads", "1", "--seed", "5", "--epochs", str(epochs), "--log-interval", "5",
           "--compress-start", "0.5", "--compress-end", "0.6", "--prune-freq", "3"]  # fmt: skip
    return cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)  # fmt: skip


@pytest.mark.slow
def test_pruning_run_resumes_after_kill_9_with_its_masks(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", train_lines=1500)
    epochs = 5
    cmd, ref = _spawn_prune(corpus, tmp_path / "ref", epochs)
    assert ref.wait(timeout=300) == 0, ref.stdout.read().decode()
    reference = json.loads((tmp_path / "ref" / "summary.json").read_text())
    out = tmp_path / "killed"
    cmd, proc = _spawn_prune(corpus, out, epochs)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        path = out / "metrics.jsonl"
        if path.is_file() and path.read_text().count('"kind": "epoch"') >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = torch.load(out / "checkpoint.pt", weights_only=True)
    masks = partial["compress"]["masks"]
    assert partial["epoch"] >= 3 and any(not bool(m.all()) for m in masks.values())
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "summary.json").read_text())
    assert epochs_without_time(resumed) == epochs_without_time(reference)
    assert resumed["rnn_params"] == reference["rnn_params"] < reference["rnn_params_dense"]
    final = torch.load(out / "checkpoint.pt", weights_only=True)
    ref_final = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    for name, m in final["compress"]["masks"].items():
        assert torch.equal(m, ref_final["compress"]["masks"][name])


def test_sweep_names_the_method(corpus):
    from rrnn.experiments.sweep import expand

    base = small_config(corpus, prune_freq=2, compress_start=0.5).to_dict()
    runs = expand(base, {"compresses": ["restrict", "dense", "prune"]})
    names = [r.name for r in runs]
    assert (
        names[0].endswith("seed3") and names[1].endswith("-dense") and names[2].endswith("-prune")
    )


# ---------------------------------------------------------------------------
# Sparse inference, latency and the report's Pareto figures
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_sparse_rnn_equals_the_pruned_dense_module(mode):
    from rrnn.baselines.sparse import SparseRNN

    torch.manual_seed(0)
    rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[mode](6, 9, 2).double()
    pruner = GradualPruner(rnn, 0.6, start=0, end=1, freq=1, schedule="cubic")
    pruner.step()
    pruner.step()
    assert 0.55 < 1 - pruner.density() < 0.65
    sparse = SparseRNN(rnn)
    x = torch.randn(7, 3, 6, dtype=torch.float64)
    h = torch.randn(2, 3, 9, dtype=torch.float64)
    hx = (h, torch.randn_like(h)) if mode == "lstm" else h
    out, state = sparse(x, hx)
    with torch.no_grad():
        ref, ref_state = rnn(x, hx)
    torch.testing.assert_close(out, ref)
    for a, b in zip(
        state if mode == "lstm" else [state], ref_state if mode == "lstm" else [ref_state]
    ):
        torch.testing.assert_close(a, b)


def test_report_draws_pareto_figures_with_latency(tmp_path, corpus):
    from rrnn.cli import main
    from rrnn.experiments.sweep import expand

    out = tmp_path / "sweep"
    base = small_config(corpus, epochs=2, variant="plain", prune_freq=2, compress_start=0.5).to_dict()
    runs = expand(base, {"compresses": ["restrict", "dense", "prune", "iss"]})
    for run in runs:
        T.train(T.TrainConfig.from_dict(run.config), out / run.name, **QUIET)
    code = main(["report", str(out), "--latency", "--threads", "1"])
    assert code == 0
    report = (out / "report.md").read_text()
    assert "## Compression methods" in report
    for name in ("pareto-params.png", "pareto-latency.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    for run in runs:
        lat = json.loads((out / run.name / "latency.json").read_text())
        assert set(lat["shapes"]) == {"stream", "batch80"}
        for entry in lat["shapes"].values():
            assert entry["latency_s"] > 0 and entry["torch_s"] > 0
            assert entry["ratio_to_torch"] == pytest.approx(entry["latency_s"] / entry["torch_s"])
        if run.name.endswith("-prune"):
            assert all(e["sparse_s"] > 0 for e in lat["shapes"].values())
            assert all(
                e["latency_s"] == min(e["dense_s"], e["sparse_s"]) for e in lat["shapes"].values()
            )
        assert lat["machine"]["threads"] == 1
    # the paper's claims are judged on restricted runs only: the compared methods are not "r=0.5"
    rows = (out / "report.csv").read_text().splitlines()
    assert any(",dense," in r for r in rows) and any(",restrict," in r for r in rows)

    # a report elsewhere measures into its own folder and leaves the runs as they are
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    elsewhere = tmp_path / "elsewhere"
    assert main(["report", str(out), "--latency", "--threads", "1", "--out", str(elsewhere)]) == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.stem for p in (elsewhere / "latency").iterdir()) == sorted(r.name for r in runs)
    assert (elsewhere / "pareto-latency.png").is_file()


def test_lowrank_frozen_keeps_the_products_and_equals_the_plain_call():
    torch.manual_seed(0)
    m = LowRankRNN("lstm", 6, 8, 2, rank=3).eval()
    x = torch.randn(1, 2, 6)
    with torch.no_grad():
        plain, _ = m(x)
        with m.frozen():
            calls = []
            orig = m.full_weights
            m.full_weights = lambda: calls.append(1) or orig()
            inside, _ = m(x)
            m(x)
            del m.full_weights
        assert calls == []  # the products formed on entry are reused
    torch.testing.assert_close(inside, plain)
    # a call that needs gradients inside frozen() still forms the products
    with m.frozen():
        out, _ = m(x)
        assert out.requires_grad


def test_a_folder_of_compressed_runs_is_not_reported_as_restricted(tmp_path, corpus):
    from rrnn.experiments.report import write_report
    from rrnn.experiments.sweep import expand

    out = tmp_path / "sweep"
    base = small_config(corpus, epochs=1, variant="plain", prune_freq=2, compress_start=0.2).to_dict()
    for run in expand(base, {"compresses": ["dense", "prune"]}):
        T.train(T.TrainConfig.from_dict(run.config), out / run.name, **QUIET)
    write_report(out, log=lambda m: None)
    report = (out / "report.md").read_text()
    tables = report[report.index("## Perplexity") : report.index("## The paper's claims")]
    assert "RLSTM" not in tables  # a dense and a pruned run are not two seeds of r = 0.5
    assert "dense, hidden" in report and "pruned (narang)" in report


@pytest.mark.parametrize(
    "kw,message",
    [(dict(compress="lowrank", rank=0), "rank must be a positive integer, got 0"),
     (dict(compress="lowrank", rank=201), "rank 201 is too large"),
     (dict(compress="dense", target_params=5_000_000), "dense of a lstm 3x200 reaches between"),
     (dict(compress="lowrank", target_params=5_000_000), "lowrank of a lstm 3x200 reaches"),
     (dict(compress="iss", variant="plain", target_params=5_000_000), "iss of a lstm 3x200"),
     (dict(compress="dense", target_params=964_800), "is outside")],
)  # fmt: skip
def test_a_budget_a_method_cannot_reach_is_refused_before_anything_is_written(
    tmp_path, kw, message
):
    from rrnn.lm.train import TrainConfig, train

    with pytest.raises(ValueError, match=message):
        train(TrainConfig(dataset="ptb", **kw), tmp_path / "run", log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_a_method_that_ends_off_its_budget_says_so(tmp_path):
    from rrnn.experiments import report as R
    from rrnn.lm.train import train

    from .lm_helpers import small_config, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    said = []
    # no hidden size of a 2 x H LSTM on 16 inputs has 1,000 parameters: H = 6 has 912
    cfg = small_config(corpus, compress="dense", variant="plain", epochs=1, target_params=1000)
    summary = train(cfg, tmp_path / "sweep" / "run", log=said.append, progress=False)
    assert summary["budget"] == 1000 and summary["rnn_params"] == 912
    assert summary["budget_off"] == pytest.approx(-0.088)
    assert "-8.8% off its budget of 1,000" in summary["budget_note"]
    assert any("off its budget" in m for m in said)
    R.write_report(tmp_path / "sweep", log=lambda m: None)
    assert "Off budget" in (tmp_path / "sweep" / "report.md").read_text()
    within = small_config(corpus, compress="dense", variant="plain", epochs=1, target_params=700)
    assert train(within, tmp_path / "other", **dict(log=lambda m: None, progress=False))[
        "budget_note"
    ] is None


def test_a_run_still_training_is_not_called_off_budget(tmp_path):
    """Gradual pruning and ISS reach their budget only at the end of their ramp, so
    a summary written between epochs carries how far the model is (budget_off) but
    no note, and the report lists under "Off budget" only runs that ended (also for
    a summary an older version wrote mid-run with a note)."""
    import json

    from rrnn.experiments import report as R
    from rrnn.lm.train import train

    from .lm_helpers import small_config, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    run = tmp_path / "sweep" / "run"
    mid = []

    def log(message):
        if message.startswith("epoch   1 |"):  # summary.json was written just before
            mid.append(json.loads((run / "summary.json").read_text()))

    cfg = small_config(corpus, compress="dense", variant="plain", epochs=2, target_params=1000)
    final = train(cfg, run, log=log, progress=False)
    assert [m["status"] for m in mid] == ["running"]
    assert mid[0]["budget_off"] == pytest.approx(-0.088) and mid[0]["budget_note"] is None
    assert "off its budget" in final["budget_note"]
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    R.write_report(tmp_path / "sweep", log=lambda m: None)
    assert "Off budget" not in (tmp_path / "sweep" / "report.md").read_text()


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
def test_sparse_rnn_round_trips_through_a_state_dict(mode, tmp_path):
    import warnings

    from rrnn.baselines.sparse import SparseRNN

    torch.manual_seed(0)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[mode]
    pruned = cls(5, 6, 2)
    with torch.no_grad():
        for p in pruned.parameters():
            p[p.abs() < 0.25] = 0  # about 40% of the entries
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        sparse = SparseRNN(pruned)
        assert {k for k, v in sparse.state_dict().items() if v.layout == torch.sparse_csr} == {
            f"weight_{k}_l{i}" for k in ("ih", "hh") for i in range(2)
        }
        torch.save(sparse.state_dict(), tmp_path / "sparse.pt")
        # built from an unpruned stack of the same shapes (other entry counts), then loaded
        loaded = SparseRNN(cls(5, 6, 2))
        loaded.load_state_dict(torch.load(tmp_path / "sparse.pt", weights_only=True))
        x = torch.randn(4, 3, 5)
        torch.testing.assert_close(loaded(x)[0], pruned(x)[0])
        wrong = SparseRNN(cls(5, 7, 2))
        with pytest.raises(RuntimeError, match="expected a torch.sparse_csr tensor of shape"):
            wrong.load_state_dict(sparse.state_dict())


def test_compression_options_are_their_own_object_and_the_files_stay_flat():
    """TrainConfig.compression is the method and its options alone (checked and
    sized against a stack shape); config.json keeps one flat namespace, so a
    committed run's config loads into the same settings and writes back the same keys."""
    from pathlib import Path

    from rrnn.lm.config import CompressionOptions, StackShape, TrainConfig

    cfg = TrainConfig(compress="prune", prune_schedule="cubic", sharing_rate=0.5)
    opts = cfg.compression
    assert type(opts) is CompressionOptions and opts.prune_schedule == "cubic"
    shape = StackShape("lstm", 200, 200, 3, 0.5)
    assert opts.budget(shape) == cfg.budget() == count_parameters("lstm", 200, 200, 3, 0.5) == 542_700
    assert opts.resolved_sparsity(shape) == cfg.resolved_sparsity()
    with pytest.raises(ValueError, match="--rank is an option of --compress lowrank"):
        CompressionOptions(compress="prune", rank=4).check(shape, tied=False)
    with pytest.raises(ValueError, match="--compress iss needs untied weights"):
        CompressionOptions(compress="iss").check(shape, tied=True)
    with pytest.raises(ValueError, match="--iss-lambda is an option of --compress iss"):
        opts.check_given({"iss_lambda"})
    run = Path(__file__).resolve().parents[1] / "docs/results/ptb-paper-schedule/runs"
    stored = json.loads((run / "ptb-lstm-r0-plain-lr10-authors-seed1/config.json").read_text())
    assert TrainConfig.from_dict(stored["train"]).to_dict().keys() == stored["train"].keys()


def test_latency_of_a_run_without_checkpoint_times_its_architecture(tmp_path, corpus):
    """Committed runs carry no checkpoints: their latency is that of the run's final
    architecture with fresh weights, the same shapes (and, for pruning, the same
    nonzero count) as the trained model."""
    import shutil

    from rrnn.experiments.latency import measure_sweep, run_model
    from rrnn.experiments.sweep import expand

    trained, bare = tmp_path / "trained", tmp_path / "bare"
    base = small_config(corpus, epochs=2, variant="plain", prune_freq=2, compress_start=0.5).to_dict()
    runs = expand(base, {"compresses": ["restrict", "dense", "prune", "iss", "lowrank"]})
    for run in runs:
        T.train(T.TrainConfig.from_dict(run.config), trained / run.name, **QUIET)
        shutil.copytree(trained / run.name, bare / run.name, ignore=shutil.ignore_patterns("*.pt"))
    for run in runs:
        model, _, weights = run_model(trained / run.name)
        shaped, t, shaped_weights = run_model(bare / run.name)
        assert (weights, shaped_weights) == ("best.pt", "architecture")
        assert t == json.loads((trained / run.name / "config.json").read_text())["train"]
        shapes = {n: p.shape for n, p in model.rnn.named_parameters()}
        assert {n: p.shape for n, p in shaped.rnn.named_parameters()} == shapes, run.name
        assert type(shaped.rnn) is type(model.rnn)
        nonzero = sum(int(p.count_nonzero()) for p in shaped.rnn.parameters())
        summary = json.loads((bare / run.name / "summary.json").read_text())
        if run.name.endswith("-prune"):
            assert nonzero == summary["rnn_params_nonzero"] < summary["rnn_params_dense"]
        if run.name.endswith("-iss"):
            assert list(shaped.rnn.widths) == summary["widths"]
    broken = tmp_path / "broken"
    shutil.copytree(bare / runs[0].name, broken)
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no readable config.json"):
        run_model(broken)
    records = measure_sweep(bare, log=lambda m: None, repeats=2, stream_block=2)
    assert sorted(r["run"] for r in records) == sorted(r.name for r in runs)
    assert all(r["weights"] == "architecture" for r in records)
    assert json.loads((bare / runs[0].name / "latency.json").read_text())["weights"] == "architecture"
