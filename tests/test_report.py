"""rrnn report, built from fixture run directories (no training): selection
rules, the paper's numbers beside ours, Table II, claims, unfinished and
diverged runs, figures, and the path without matplotlib."""

import csv
import json
import sys

import pytest

from rrnn import count_parameters
from rrnn.cli import main
from rrnn.experiments import report as R
from rrnn.lm.train import TrainConfig
from rrnn.paper import paper_perplexity, tables


def _history(pairs):
    """[(valid, test), ...] -> epoch records as rrnn train writes them."""
    return [
        {"kind": "epoch", "epoch": i + 1, "valid_ppl": v, "test_ppl": t, "train_ppl": 1.0,
         "lr": 1.0, "train_tokens": 10, "elapsed": 1.0}
        for i, (v, t) in enumerate(pairs)
    ]  # fmt: skip


def make_run(root, cell, rate, pairs, status="completed", epochs=None, summary=True, **train):
    train = {"variant": "tied-dropout", **train}
    cfg = TrainConfig(dataset="ptb", cell=cell, sharing_rate=rate, epochs=epochs or len(pairs),
                      **train)  # fmt: skip
    from rrnn.experiments.sweep import run_name

    d = root / run_name(cfg)
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"train": cfg.to_dict(), "model": {}}))
    history = _history(pairs)
    (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    if summary:
        rnn = count_parameters(cell, 200, 200, 3, sharing_rate=rate)
        (d / "summary.json").write_text(
            json.dumps({"status": status, "history": history, "rnn_params": rnn})
        )
    return d


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    # best validation at epoch 2 (test 120); the minimum test is at epoch 3 (110)
    make_run(root, "lstm", 0.0, [(150, 140), (125, 120), (130, 110)])
    make_run(root, "lstm", 0.5, [(140, 130), (118, 115), (119, 116)])
    make_run(root, "lstm", 1.0, [(200, 190), (180, 175), (181, 176)])
    make_run(root, "rnn", 0.0, [(250, 240), (240, 230), (239, 229)])
    make_run(root, "lstm", 0.9, [(300, 290)], status="diverged", epochs=3)
    # killed in epoch 2: no summary, one epoch record and a line cut mid-write
    d = make_run(root, "gru", 0.0, [(400, 390)], epochs=3, summary=False)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"kind": "epo')
    return root


def test_selection_rules(sweep):
    runs = {r.name: r for r in R.load_sweep(sweep)}
    lstm0 = runs["ptb-lstm-r0-tied-dropout-lr1-authors-seed1"]
    assert lstm0.selected("best-valid") == (120, 125, 2)
    assert lstm0.selected("min-test") == (110, 125, 2)


def test_csv_has_every_run_with_the_paper_beside_ours(sweep, tmp_path):
    R.write_report(sweep, tmp_path / "out")
    rows = {r["run"]: r for r in csv.DictReader(open(tmp_path / "out" / "report.csv"))}
    assert len(rows) == 6  # the diverged and the unfinished run are not dropped
    half = rows["ptb-lstm-r0.5-tied-dropout-lr1-authors-seed1"]
    assert float(half["paper_test_ppl"]) == 103.5 and float(half["paper_valid_ppl"]) == 108.6
    assert float(half["test_vs_paper"]) == pytest.approx((115 - 103.5) / 103.5)
    # the paper's Table II convention: exact recurrent count + 9,800
    assert float(half["table_ii_millions"]) == pytest.approx((542_700 + 9_800) / 1e6)
    assert rows["ptb-lstm-r0.9-tied-dropout-lr1-authors-seed1"]["status"] == "diverged"
    gru = rows["ptb-gru-r0-tied-dropout-lr1-authors-seed1"]
    assert gru["status"] == "unfinished" and gru["epochs_done"] == "1"
    assert float(gru["rnn_params"]) == count_parameters("gru", 200, 200, 3, sharing_rate=0.0)


def test_markdown_states_the_rule_and_shows_unfinished_runs(sweep, tmp_path):
    for rule, lstm0 in (("best-valid", "120.0 (125.0)"), ("min-test", "110.0 (125.0)")):
        R.write_report(sweep, tmp_path / rule, rule=rule)
        md = (tmp_path / rule / "report.md").read_text()
        assert R.RULE_TEXT[rule] in md
        assert lstm0 in md
        assert "unfinished, 1/3 epochs" in md and "diverged, 1/3 epochs" in md
        assert "107.7 (112.5)" in md  # the paper's LSTM r=0 beside ours
        assert "| lstm | 0.5 | 542,700 | 0.5525 | 0.553 |" in md
        assert "Budget: 3 epochs per run; the paper trained 100" in md
        assert "Measured on: not recorded by these runs." in md


def test_machine_given_by_hand_for_runs_that_did_not_record_it(sweep, tmp_path):
    R.write_report(sweep, tmp_path / "out", machine="a 2-core test box")
    assert "Measured on: a 2-core test box." in (tmp_path / "out" / "report.md").read_text()


def test_runs_table_names_the_cpu_only_where_runs_ran_on_several(tmp_path):
    root = tmp_path / "sweep"
    a = make_run(root, "lstm", 0.0, [(150, 140)])
    b = make_run(root, "lstm", 0.5, [(140, 130)])
    xeon = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_id": "family 6 model 167", "cores": 2}
    for d in (a, b):
        s = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**s, "machine": xeon}))
    one = R.runs_table(R.load_sweep(root), "best-valid")
    assert "CPU" not in one.splitlines()[0]
    s = json.loads((b / "summary.json").read_text())
    epyc = {"cpu": "AMD EPYC 7B13", "cpu_id": "family 25 model 1", "cores": 2}
    (b / "summary.json").write_text(json.dumps({**s, "machine": epyc}))
    lines = R.runs_table(R.load_sweep(root), "best-valid").splitlines()
    assert lines[0].endswith("| CPU |")
    assert lines[2].endswith("| Intel Xeon (family 6 model 167) |")
    assert lines[3].endswith("| AMD EPYC 7B13 (family 25 model 1) |")


def test_claims_are_judged_on_finished_runs(sweep):
    found = {c["claim"]: c for c in R.claims(R.load_sweep(sweep), "best-valid")}
    assert found[1]["verdict"] == "holds"  # r=0.5: 115 <= 120 * 1.01
    assert "115.0 vs LSTM r=0 120.0" in found[1]["evidence"][0]["numbers"]
    assert found[2]["verdict"] == "holds"  # r=1: 175 >= 115 * 1.05
    # LSTM r=0.9 diverged where the RNN trained: it did not beat it; GRU r=0 unfinished
    assert found[3]["verdict"].startswith("does not hold (only in part: RLSTM r = 0.3")
    assert "RLSTM r=0.9 diverged vs RNN r=0 229.0" in found[3]["evidence"][0]["numbers"]
    assert found[4]["verdict"] == "not covered by this sweep"  # no plain variant


def test_a_diverged_run_is_worse_than_one_that_trained_and_two_are_not_compared(tmp_path):
    root = tmp_path / "sweep"
    plain = dict(variant="plain", lr=10.0)
    make_run(root, "lstm", 0.0, [(125, 121)], **plain)
    make_run(root, "lstm", 0.5, [(900, 800)], status="diverged", **plain)
    make_run(root, "lstm", 1.0, [(900, 800)], status="diverged", **plain)
    make_run(root, "lstm", 0.9, [(900, 800)], status="diverged", **plain)
    make_run(root, "rnn", 0.0, [(900, 800)], status="diverged", **plain)
    make_run(root, "lstm", 0.5, [(110, 105)], variant="tied-dropout", lr=10.0)
    make_run(root, "lstm", 0.0, [(111, 106)], variant="tied-dropout", lr=10.0, status="running")
    found = {c["claim"]: c for c in R.claims(R.load_sweep(root), "best-valid")}
    plain_1 = [e for e in found[1]["evidence"] if "plain" in e["where"]]
    assert [e["holds"] for e in plain_1] == [False]  # r = 0.5 diverged, r = 0 trained
    assert plain_1[0]["numbers"] == "RLSTM r=0.5 diverged vs LSTM r=0 121.0"
    assert found[2]["verdict"] == "holds"  # r = 1 diverged: clearly worse than r = 0
    assert found[3]["verdict"] == "not covered by this sweep"  # both diverged: no comparison
    assert found[4]["verdict"] == "holds"  # tied-dropout trains at r = 0.5, plain diverged
    assert found[4]["evidence"][0]["numbers"] == "tied-dropout 105.0 vs plain diverged"
    R.write_report(root, log=lambda m: None)
    text = (root / "report.md").read_text()
    assert "Unfinished: ptb-lstm-r0-tied-dropout-lr10" in text
    assert "diverged-" not in text.split("Unfinished:")[1]


def test_unfinished_runs_give_provisional_evidence_at_equal_epochs(tmp_path):
    """An unfinished run is compared with the others at its own epochs: r = 0's best
    within 2 epochs is 110 (valid 112), though it reaches 100 by epoch 4."""
    root = tmp_path / "sweep"
    tied = dict(variant="tied-dropout", lr=10.0)
    make_run(root, "lstm", 0.0, [(120, 118), (112, 110), (105, 103), (102, 100)], **tied)
    make_run(root, "lstm", 0.5, [(115, 113), (110, 108)], status="running", epochs=4, **tied)
    make_run(root, "lstm", 1.0, [], status="running", epochs=4, **tied)  # no epoch yet
    found = {c["claim"]: c for c in R.claims(R.load_sweep(root), "best-valid")}
    assert found[1]["verdict"] == "holds (" + R.PROVISIONAL_NOTE + ")"  # 108 <= 110 * 1.01
    (e,) = found[1]["evidence"]
    assert e["provisional"] and e["epochs"] == 2
    assert e["numbers"] == "RLSTM r=0.5 108.0 vs LSTM r=0 110.0 (-1.8%)"
    assert found[2]["verdict"] == "not covered by this sweep"  # r = 1 has no epoch to read
    R.write_report(root, log=lambda m: None)
    text = (root / "report.md").read_text()
    assert "-> holds (provisional: each run's best within its first 2 epochs)" in text


def test_provisional_evidence_does_not_overrule_a_finished_comparison(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "lstm", 0.0, [(100, 100)], variant="plain")
    make_run(root, "lstm", 0.5, [(100.5, 100.5)], variant="plain")
    make_run(root, "lstm", 0.0, [(90, 90)], status="running", epochs=3)  # tied-dropout
    make_run(root, "lstm", 0.5, [(99, 99)], status="interrupted", epochs=3)
    found = {c["claim"]: c for c in R.claims(R.load_sweep(root), "best-valid")}
    assert found[1]["verdict"] == "holds"  # the plain pair, finished; not "mixed"
    final, maybe = found[1]["evidence"]
    assert final["numbers"] == "RLSTM r=0.5 100.5 vs LSTM r=0 100.0 (+0.5%)"
    assert "provisional" not in final
    assert maybe["provisional"] and not maybe["holds"]  # 99 against 90, at 1 epoch each
    # a finished seed and an unfinished one at r = 0.5: the verdict reads the finished one,
    # and the provisional line (both seeds, at equal epochs) is not repeated for the group
    make_run(root, "lstm", 0.5, [(101, 101), (100, 100)], variant="plain", seed=2,
             status="running", epochs=3)  # fmt: skip
    found = {c["claim"]: c for c in R.claims(R.load_sweep(root), "best-valid")}
    plain = [e for e in found[1]["evidence"] if "plain" in e["where"]]
    assert len(plain) == 1 and "provisional" not in plain[0]


def test_claims_take_the_mean_over_seeds_as_the_tables_do(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "lstm", 0.0, [(100, 100)])
    make_run(root, "lstm", 0.5, [(100, 100)])  # seed 1: as good
    make_run(root, "lstm", 0.5, [(110, 110)], seed=2)  # seed 2: 10% worse
    found = {c["claim"]: c for c in R.claims(R.load_sweep(root), "best-valid")}
    assert found[1]["verdict"] == "does not hold"  # mean 105 > 100 * 1.01
    assert "RLSTM r=0.5 105.0 [2 seeds] vs LSTM r=0 100.0" in found[1]["evidence"][0]["numbers"]


def test_claims_can_fail(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "lstm", 0.0, [(100, 100)])
    make_run(root, "lstm", 0.5, [(120, 120)])
    make_run(root, "lstm", 1.0, [(101, 101)])
    found = {c["claim"]: c for c in R.claims(R.load_sweep(root), "best-valid")}
    assert found[1]["verdict"] == "does not hold"
    assert found[2]["verdict"] == "does not hold"


def test_a_claim_judged_on_one_of_its_parts_says_so(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "lstm", 0.9, [(150, 150)])
    make_run(root, "rnn", 0.0, [(160, 160)])
    found = {c["claim"]: c for c in R.claims(R.load_sweep(root), "best-valid")}
    assert found[3]["verdict"] == (
        "holds (only in part: RLSTM r = 0.3 against the GRU not in this sweep)"
    )
    make_run(root, "lstm", 0.3, [(140, 140)])
    make_run(root, "gru", 0.0, [(145, 145)])
    found = {c["claim"]: c for c in R.claims(R.load_sweep(root), "best-valid")}
    assert found[3]["verdict"] == "holds"


def test_figures_are_png_files(sweep, tmp_path):
    pytest.importorskip("matplotlib")
    result = R.write_report(sweep, tmp_path / "out")
    names = sorted(p.name for p in result["figures"])
    assert names == ["learning-curves.png", "ppl-vs-params-ptb.png"]
    for p in result["figures"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    assert "![learning-curves](learning-curves.png)" in (tmp_path / "out" / "report.md").read_text()


def test_without_matplotlib_tables_are_written_and_the_fix_is_named(
    sweep, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(sweep), "--out", str(tmp_path / "out")]) == 0
    assert 'pip install "rrnn[plot]"' in capsys.readouterr().out
    assert not list((tmp_path / "out").glob("*.png"))
    assert 'pip install "rrnn[plot]"' in (tmp_path / "out" / "report.md").read_text()


def test_report_of_a_folder_without_runs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run directories" in capsys.readouterr().err


def test_paper_tables_ship_with_the_package_and_match_the_paper_text():
    doc = tables()
    assert "Restricted Recurrent Neural Networks" in doc["source"]
    assert paper_perplexity("ptb", "tied-dropout", "lstm", 0.5) == (103.5, 108.6)
    assert paper_perplexity("wikitext-2", "plain", "gru", 0.9) == (177.7, 191.9)
    assert paper_perplexity("ptb", "plain", "lstm", 0.4) is None
    for dataset in ("ptb", "wikitext-2"):
        for variant in ("plain", "tied-dropout"):
            for cell in ("rnn", "gru", "lstm"):
                rows = doc["perplexity"][dataset][variant][cell]
                assert len(rows) == 8 and all(t < v for t, v in rows)  # test below valid


def test_compression_figures_compare_like_with_like_and_tell_methods_apart(tmp_path):
    from rrnn.experiments import pareto as C

    root = tmp_path / "sweep"
    plain = dict(variant="plain")
    make_run(root, "lstm", 0.0, [(150, 140)], **plain)
    make_run(root, "lstm", 0.5, [(160, 150)], **plain)
    make_run(root, "lstm", 0.5, [(155, 145)], compress="dense", **plain)
    make_run(root, "lstm", 0.5, [(157, 147)], compress="prune", **plain)
    make_run(root, "lstm", 0.0, [(90, 80)], lr=10.0, **plain)  # trained otherwise: not compared
    make_run(root, "gru", 0.0, [(140, 130)], **plain)  # another cell: not compared
    runs = R.load_sweep(root)
    styles = {C.describe(r): C.style(r) for r in runs if r.train["lr"] == 1.0}
    assert len(set(styles.values())) == len(styles) == 4  # one style per method
    assert styles["classical (r=0)"] != styles["restricted r=0.5"]
    R.write_report(root, log=lambda m: None)
    section = (root / "report.md").read_text().split("## Compression methods")[1]
    section = section.split("## ")[0]
    assert "lr10" not in section and "gru" not in section
    assert "ptb-lstm-r0-plain-lr1" in section and "-dense" in section


def test_compressed_runs_of_two_settings_get_a_table_and_figures_each(tmp_path):
    """Compressed runs at lr 1 and lr 10: each setting its own table, verdict and
    Pareto figure, so that the lr-10 dense model (better than anything at lr 1) is
    never ranked against the lr-1 runs."""
    root = tmp_path / "sweep"
    for lr, shift in ((1.0, 0), (10.0, -40)):
        make_run(root, "lstm", 0.0, [(150 + shift, 140 + shift)], lr=lr, variant="plain")
        make_run(root, "lstm", 0.5, [(160 + shift, 150 + shift)], lr=lr, variant="plain")
        make_run(root, "lstm", 0.5, [(155 + shift, 145 + shift)], lr=lr, compress="dense", variant="plain")
    make_run(root, "lstm", 0.5, [(158, 148)], lr=1.0, compress="prune", variant="plain")
    R.write_report(root, log=lambda m: None)
    text = (root / "report.md").read_text()
    section = text.split("## Compression methods")[1].split("\n## ")[0]
    parts = section.split("\n### ")[1:]
    assert [p.splitlines()[0] for p in parts] == [
        "ptb, plain, lr 1, init authors, 1 epochs", "ptb, plain, lr 10, init authors, 1 epochs"]
    lr1, lr10 = parts
    assert "-lr10" not in lr1 and "-lr1-" not in lr10 and "prune" not in lr10
    assert "**dense, hidden" in lr1 and "(155.00)" in lr1  # its own setting's best
    assert "(115.00)" in lr10
    made = sorted(p.name for p in root.glob("pareto-*.png"))
    assert made == ["pareto-params-lr1.png", "pareto-params-lr10.png"]
    assert "![pareto-params-lr10](pareto-params-lr10.png)" in text


def test_no_smaller_finished_run_is_said_so_not_ranked(tmp_path):
    """With only the full-size run finished, no method is named 'lowest below the
    largest model': the section says none has finished and lists the runs so far."""
    root = tmp_path / "sweep"
    make_run(root, "lstm", 0.0, [(150, 140)], status="early-stopped", epochs=100, variant="plain")
    make_run(root, "lstm", 0.5, [(155, 145), (150, 141)], status="running", epochs=100,
             compress="dense", variant="plain")  # fmt: skip
    R.write_report(root, log=lambda m: None)
    section = (root / "report.md").read_text().split("## Compression methods")[1]
    assert "Lowest test perplexity" not in section
    assert "No run below the largest model (964,800) has finished yet." in section
    assert "So far, still training: **dense, hidden" in section


def test_damaged_files_are_named_and_never_kill_the_report(sweep, tmp_path):
    bad = make_run(sweep, "lstm", 0.3, [(150, 140)], summary=False)
    with open(bad / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "epoch", "epoch": 2, \xda\xff}\n')  # an undecodable byte
    broken = make_run(sweep, "lstm", 0.7, [(150, 140)])
    (broken / "config.json").write_bytes(b"{\xda not json")
    (sweep / make_run(sweep, "lstm", 0.1, [(150, 140)]).name / "summary.json").write_text(
        json.dumps({"status": "completed", "history": "not a list", "rnn_params": 5})
    )
    said = []
    R.write_report(sweep, log=said.append)
    text = (sweep / "report.md").read_text()
    assert "ptb-lstm-r0.3-tied-dropout" in text  # read from its metrics, the bad line skipped
    assert any(str(broken / "config.json") in m for m in said)
    assert "Left out, unreadable" in text and str(broken / "config.json") in text


def test_report_of_a_missing_folder_creates_nothing_and_one_run_is_a_report(sweep, tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="no sweep folder"):
        R.write_report(missing, log=lambda m: None)
    assert not missing.exists()
    one = next(d for d in sweep.iterdir() if d.name.startswith("ptb-lstm-r0.5"))
    R.write_report(one, out=tmp_path / "one", log=lambda m: None)
    assert "1 runs" in (tmp_path / "one" / "report.md").read_text()


def test_seeds_are_one_line_with_a_band_not_a_zig_zag(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    root = tmp_path / "sweep"
    for seed, shift in ((1, 0), (2, 10)):
        make_run(
            root, "lstm", 0.0, [(150 + shift, 140 + shift), (125 + shift, 120 + shift)], seed=seed
        )
        make_run(
            root, "lstm", 0.5, [(140 + shift, 130 + shift), (118 + shift, 115 + shift)], seed=seed
        )
    lines, bands = [], []
    plot, fill = Axes.plot, Axes.fill_between
    monkeypatch.setattr(Axes, "plot", lambda ax, *a, **k: lines.append((a, k)) or plot(ax, *a, **k))
    monkeypatch.setattr(
        Axes, "fill_between", lambda ax, *a, **k: bands.append(a) or fill(ax, *a, **k)
    )
    R.write_report(root, log=lambda m: None)
    ours = [(a, k) for a, k in lines if "seeds" in k.get("label", "")]
    # a learning curve per setting (2) and one perplexity-vs-parameters line through both
    assert len(ours) == 3 and len(bands) == 3
    for args, kwargs in ours:
        xs = list(args[0])
        assert xs == sorted(set(xs)), kwargs["label"]  # one point per x: no zig-zag
        assert "mean of 2 seeds (band: min-max)" in kwargs["label"]
    curve = next(a for a, k in ours if "r=0," in k["label"] or "r=0 " in k["label"])
    assert list(curve[1]) == [155, 130]  # the mean of the two seeds' validation perplexities


def test_compression_table_marks_runs_still_training_and_never_crowns_them(tmp_path):
    """A compressed run still training shows its best so far with how far it got;
    the "lowest" line names a finished run, and says which unfinished ones are
    lower so far."""
    root = tmp_path / "sweep"
    plain = dict(variant="plain", epochs=5)  # one schedule: the runs compare
    make_run(root, "lstm", 0.0, [(150, 140)], status="early-stopped", **plain)
    make_run(root, "lstm", 0.5, [(160, 150)], status="early-stopped", **plain)
    make_run(
        root, "lstm", 0.5, [(130, 125), (125, 120)], compress="lowrank", status="running", **plain
    )
    R.write_report(root, log=lambda m: None)
    section = (root / "report.md").read_text().split("## Compression methods")[1].split("## ")[0]
    row = next(line for line in section.splitlines() if "-lowrank" in line)
    assert "120.00 (125.00), unfinished after 2/5 epochs" in row
    lowest = next(line for line in section.splitlines() if line.startswith("Lowest test"))
    assert (
        "among the finished runs" in lowest
        and "restricted r=0.5" in lowest
        and "(150.00)" in lowest
    )
    assert "Lower so far, still training: **low-rank" in section


def test_the_equal_size_panel_takes_the_compressed_runs_budget(tmp_path):
    """The figure's side-by-side panel holds the runs within 2% of the compressed
    runs' size: the restricted layer at that rate and the compressed runs, not the
    classical layer or other rates."""
    from rrnn.experiments import pareto as C

    root = tmp_path / "sweep"
    plain = dict(variant="plain")
    for rate in (0.0, 0.5, 0.9):
        make_run(root, "lstm", rate, [(150, 140)], **plain)
    for method in ("dense", "prune"):
        make_run(root, "lstm", 0.5, [(155, 145)], compress=method, **plain)
    runs = R.load_sweep(root)
    for r in runs:  # the compressed runs keep r = 0.5's budget
        if r.method != "restrict":
            r.rnn_params = count_parameters("lstm", 200, 200, 3, sharing_rate=0.5)
    names = sorted(r.name for r in C._at_one_budget(runs))
    assert names == sorted(r.name for r in runs if "r0.5" in r.name)
    assert C._at_one_budget([r for r in runs if r.method == "restrict"]) == []


def test_a_run_early_in_training_does_not_squash_the_figure(tmp_path):
    """A point far above the finished runs is left off the top edge and named there
    with its value; the axis spans the finished runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rrnn.experiments import pareto as C

    root = tmp_path / "sweep"
    make_run(root, "lstm", 0.0, [(150, 140)], variant="plain", epochs=5, status="early-stopped")
    make_run(root, "lstm", 0.5, [(270, 261)], variant="plain", epochs=5, status="running")
    runs = sorted(R.load_sweep(root), key=lambda r: r.finished)
    fig, ax = plt.subplots()
    for i, r in enumerate(runs):
        ax.scatter(i, r.selected("best-valid")[0])
    C._fit_to_finished(ax, runs, "best-valid", range(len(runs)))
    assert 140 < ax.get_ylim()[1] < 261
    assert any("261.00 (above)" in t.get_text() for t in ax.texts)
    plt.close(fig)


def test_the_latency_verdict_compares_runs_of_one_size(tmp_path):
    """The smallest model is the fastest whatever the method; the verdict names the
    fastest among the runs at the compressed runs' budget (here the restricted layer
    at batch 1, the dense one at batch 80), never the smaller r = 0.9 model."""
    root = tmp_path / "sweep"
    plain = dict(variant="plain")
    timings = {  # (batch 1, batch 80) in ms
        make_run(root, "lstm", 0.9, [(170, 160)], **plain): (0.1, 10.0),
        make_run(root, "lstm", 0.5, [(160, 150)], **plain): (0.3, 38.0),
        make_run(root, "lstm", 0.0, [(150, 140)], **plain): (0.4, 56.0),
        make_run(root, "lstm", 0.5, [(155, 145)], compress="dense", **plain): (0.35, 34.0),
    }
    for d, (stream, batch) in timings.items():
        shapes = {shape: {"latency_s": ms / 1e3, "ratio_to_torch": ms / ref, "form": "dense"}
                  for shape, ms, ref in (("stream", stream, 0.4), ("batch80", batch, 56.0))}  # fmt: skip
        record = {"shapes": shapes, "weights": "architecture", "machine": {"cpu": "a CPU", "threads": 1}}
        (d / "latency.json").write_text(json.dumps(record))
    R.write_report(root, log=lambda m: None)
    section = (root / "report.md").read_text().split("## Compression methods")[1]
    assert "Lowest batch 1 latency at one size (within 2% of 542,700): **restricted r=0.5**" in section
    assert "Lowest batch 80 latency at one size (within 2% of 542,700): **dense, hidden" in section
    assert "4 of the 4 timed runs had no best.pt" in section
    assert "Not timed yet" not in section
    (next(iter(timings)) / "latency.json").unlink()  # a run finished after the timing
    R.write_report(root, log=lambda m: None)
    section = (root / "report.md").read_text().split("## Compression methods")[1]
    assert "Not timed yet (`rrnn report --latency`): ptb-lstm-r0.9-plain-lr1-authors-seed1." in section


def test_seeds_of_one_setting_are_named_once_on_the_pareto_figure(tmp_path, monkeypatch):
    """Two seeds of the restricted layer at one rate sit on top of each other: the
    figure names the rate once, not twice over itself."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from rrnn.experiments import pareto as C

    root = tmp_path / "sweep"
    plain = dict(variant="plain")
    for seed in (1, 2):
        make_run(root, "lstm", 0.5, [(160 + seed, 150)], seed=seed, **plain)
    make_run(root, "lstm", 0.0, [(150, 140)], **plain)
    make_run(root, "lstm", 0.5, [(155, 145)], compress="dense", **plain)
    notes = []
    original = Axes.annotate
    monkeypatch.setattr(Axes, "annotate", lambda ax, text, *a, **k: notes.append(text) or original(ax, text, *a, **k))
    C.pareto_figures(R.load_sweep(root), "best-valid", root)
    assert notes.count("r=0.5") == 1
