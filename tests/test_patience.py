"""--patience: early stopping that keeps the cosine schedule of the full run."""

import json
import os
import signal
import subprocess

import pytest
import torch

from rrnn.cli import main
from rrnn.experiments import report as R
from rrnn.experiments.sweep import Run, inspect
from rrnn.lm import train as T

from .lm_helpers import epochs_without_time, small_config, write_corpus
from .test_lm_train import _epochs_done, _spawn, _wait_for

QUIET = dict(log=lambda m: None, progress=False)
# a corpus this small overfits within a few epochs at lr 3 (best validation at
# epoch 4 of 20 here), so that patience 2 stops it early
OVERFIT = dict(epochs=20, lr=3.0, hidden_size=32, embedding_size=32)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def small(tmp_path):
    return write_corpus(tmp_path / "small", train_lines=60, eval_lines=20)


@pytest.fixture
def full(tmp_path, small):
    """The same run without patience: every epoch of the schedule."""
    return T.train(small_config(small, **OVERFIT), tmp_path / "full", **QUIET)


def test_stops_after_patience_epochs_without_a_better_validation(tmp_path, small, full):
    summary = T.train(small_config(small, patience=2, **OVERFIT), tmp_path / "run", **QUIET)
    assert summary["status"] == "early-stopped"
    best, stopped = summary["best_epoch"], summary["stopped_epoch"]
    assert stopped == best + 2 == summary["epochs"] < 20
    assert summary["patience"] == 2 and summary["epochs_planned"] == 20
    assert "patience 2" in summary["stop_reason"] and f"epoch {best}" in summary["stop_reason"]
    # the epochs it trained are the full run's, lr included: the schedule spans --epochs
    assert epochs_without_time(summary) == epochs_without_time(full)[:stopped]
    assert [h["lr"] for h in summary["history"]] == [
        T.cosine_lr(3.0, e, 20) for e in range(stopped)
    ]
    # its best is the full run's best so far, and best.pt holds that epoch
    valid = [h["valid_ppl"] for h in full["history"][:stopped]]
    assert best == 1 + valid.index(min(valid))
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["epoch"] == best
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["status"] == "early-stopped" and saved["stopped_epoch"] == stopped


def test_patience_longer_than_the_run_changes_nothing(tmp_path, small, full):
    summary = T.train(small_config(small, patience=100, **OVERFIT), tmp_path / "run", **QUIET)
    assert summary["status"] == "completed" and summary["stopped_epoch"] is None
    assert epochs_without_time(summary) == epochs_without_time(full)


def test_resume_of_a_stopped_run_is_a_no_op_and_more_patience_continues(tmp_path, small, full):
    out = tmp_path / "run"
    first = T.train(small_config(small, patience=2, **OVERFIT), out, **QUIET)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    said = []
    again = T.train(
        small_config(small, patience=2, **OVERFIT), out, resume=True, log=said.append,
        progress=False,
    )  # fmt: skip
    assert again["status"] == "early-stopped" and again["history"] == first["history"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files
    assert any("nothing to resume" in m for m in said), said
    # patience decides only when to stop: a larger one continues the same run exactly
    longer = T.train(
        small_config(small, patience=5, **OVERFIT), out, resume=True, explicit={"patience"},
        **QUIET,
    )  # fmt: skip
    assert longer["epochs"] > first["epochs"]
    assert epochs_without_time(longer) == epochs_without_time(full)[: longer["epochs"]]


def test_a_kill_between_checkpoint_and_summary_is_repaired_on_resume(tmp_path, small):
    out = tmp_path / "run"
    T.train(small_config(small, patience=2, **OVERFIT), out, **QUIET)
    summary = json.loads((out / "summary.json").read_text())
    summary["status"] = "running"  # what the file says if killed before its last write
    (out / "summary.json").write_text(json.dumps(summary))
    T.train(small_config(small, patience=2, **OVERFIT), out, resume=True, **QUIET)
    assert json.loads((out / "summary.json").read_text())["status"] == "early-stopped"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_bad_patience_is_refused_before_anything_is_written(tmp_path, small, bad):
    with pytest.raises(ValueError, match="patience must be a positive integer"):
        T.train(small_config(small, patience=bad), tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["0", "-1", "2.5", "x"])
def test_bad_patience_on_the_command_line(tmp_path, small, flag, capsys):
    out = tmp_path / "run"
    argv = ["train", "--corpus", str(small), "--out", str(out), "--patience", flag]
    try:
        code = main(argv)  # a value argparse takes, refused by TrainConfig
    except SystemExit as err:  # one argparse refuses (not an int)
        code = err.code
    assert code == 2 and not out.exists()
    assert "patience" in capsys.readouterr().err


def test_default_is_off():
    assert T.TrainConfig().patience is None


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", train_lines=1500)
    extra = ["--patience", "1", "--lr", "5"]
    epochs = 30
    cmd, ref = _spawn(corpus, tmp_path / "ref", epochs, extra)
    assert ref.wait(timeout=300) == 0, ref.stdout.read().decode()
    reference = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert reference["status"] == "early-stopped", "make the reference overfit sooner"
    out = tmp_path / "killed"
    cmd, proc = _spawn(corpus, out, epochs, extra)
    assert _wait_for(lambda: _epochs_done(out) >= 2, proc), "finished before it was killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["status"] == "early-stopped"
    assert epochs_without_time(resumed) == epochs_without_time(reference)
    assert "stopped by patience" in done.stdout


def test_a_sweep_skips_a_stopped_run_and_continues_it_with_more_patience(tmp_path, small):
    out = tmp_path / "run"
    cfg = small_config(small, patience=2, **OVERFIT)
    T.train(cfg, out, **QUIET)
    assert inspect(Run("run", cfg.to_dict()), out).state == "done"
    more = small_config(small, patience=6, **OVERFIT).to_dict()
    assert inspect(Run("run", more), out).state == "resume"
    off = small_config(small, **OVERFIT).to_dict()  # no patience: the whole schedule
    assert inspect(Run("run", off), out).state == "resume"


def test_the_report_says_how_far_each_run_trained_and_why_it_stopped(tmp_path, small):
    T.train(small_config(small, patience=2, **OVERFIT), tmp_path / "sweep" / "a", **QUIET)
    runs = R.load_sweep(tmp_path / "sweep")
    assert runs[0].finished
    R.write_report(tmp_path / "sweep", log=lambda m: None)
    text = (tmp_path / "sweep" / "report.md").read_text()
    summary = json.loads((tmp_path / "sweep" / "a" / "summary.json").read_text())
    assert f"{summary['epochs']}/20" in text
    assert "early-stopped" in text and summary["stop_reason"] in text


@pytest.mark.parametrize("method", ["prune", "iss"])
def test_epochs_before_the_final_size_are_never_the_best_nor_count_for_patience(
    tmp_path, small, method
):
    # a model small enough to overfit at once: without the rule its best would be
    # an epoch of the full-size model, before pruning ends or the ISS cut
    extra = dict(sharing_rate=0.0, compress=method, variant="plain", target_params=2000)
    extra.update(compress_start=0.0, compress_ramp=0.3, compress_end=0.3, prune_freq=5)  # ends in epoch 6
    cfg = small_config(small, patience=1, **dict(OVERFIT, epochs=20), **extra)
    summary = T.train(cfg, tmp_path / "run", **QUIET)
    history = summary["history"]
    early = [h["epoch"] for h in history if h.get("at_final_size") is False]
    assert early == list(range(1, len(early) + 1)) and 4 <= len(early) <= 6
    # patience 1 would have stopped within the pruning epochs (this model overfits by
    # epoch 4 without pruning): it counts only from the final size on
    assert summary["best_epoch"] > early[-1]
    assert summary["status"] == "early-stopped" and summary["stopped_epoch"] > early[-1] + 1
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["epoch"] == summary["best_epoch"]
    (run,) = R.load_sweep(tmp_path)
    assert run.selected("best-valid")[2] == summary["best_epoch"]
    assert run.selected("min-test")[0] == min(
        h["test_ppl"] for h in history if h["epoch"] > early[-1]
    )
