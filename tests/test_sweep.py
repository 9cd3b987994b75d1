"""rrnn sweep: grid expansion, skip/resume/start, parallel jobs, Ctrl-C, locks, Ray."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrnn.cli import main
from rrnn.experiments import sweep as S

from .lm_helpers import epochs_without_time, write_corpus

SMALL = [
    "--layers", "1", "--embedding-size", "8", "--hidden-size", "8", "--batch-size", "4",
    "--eval-batch-size", "4", "--bptt", "8", "--log-interval", "5", "--threads", "1",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "tiny", train_lines=200, eval_lines=30)


def _sweep(out, corpus, *flags):
    return main(["sweep", "--out", str(out), "--corpus", str(corpus), *SMALL, *flags])


def _summaries(out: Path) -> dict:
    return {p.parent.name: p.read_text() for p in sorted(out.glob("*/summary.json"))}


# --- the grid ----------------------------------------------------------------
def test_expand_is_the_product_in_axis_order_with_names_from_the_axes():
    runs = S.expand(
        {"corpus": "/c", "epochs": 2},
        {"cells": ["lstm", "gru"], "sharing_rates": [0.0, 0.5], "seeds": [1, 2]},
    )
    assert len(runs) == 8
    assert runs[0].name == "corpus-c-lstm-r0-plain-lr1-authors-seed1"
    assert runs[1].name == "corpus-c-lstm-r0-plain-lr1-authors-seed2"
    assert runs[-1].name == "corpus-c-gru-r0.5-plain-lr1-authors-seed2"
    assert {r.config["epochs"] for r in runs} == {2}
    assert all(r.config["dataset"] is None for r in runs)  # a corpus replaces the dataset


def test_grids_are_a_union_and_take_the_axis_flags_for_axes_they_omit():
    grids = [
        S.parse_grid("cells=lstm sharing-rates=0,0.5,1"),
        S.parse_grid("cells=gru sharing-rates=0,0.5"),
        S.parse_grid("cells=lstm sharing-rates=0,0.5 lrs=10"),
        S.parse_grid("cells=lstm sharing-rates=0 inits=uniform"),
        S.parse_grid("cells=lstm sharing-rates=0.5"),  # a duplicate: kept once
    ]
    runs = S.expand({"epochs": 6}, {"datasets": ["ptb"], "variants": ["tied-dropout"]}, grids)
    names = [r.name for r in runs]
    assert len(names) == 8 == len(set(names))
    assert names[0] == "ptb-lstm-r0-tied-dropout-lr1-authors-seed1"
    assert "ptb-lstm-r0.5-tied-dropout-lr10-authors-seed1" in names
    assert names[-1] == "ptb-lstm-r0-tied-dropout-lr1-uniform-seed1"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: S.parse_grid("cells lstm"), "AXIS=VALUES"),
        (lambda: S.parse_grid("colours=red"), "AXIS=VALUES"),
        (lambda: S.parse_list("sharing_rates", "0,half"), "--sharing-rates"),
        (lambda: S.parse_list("seeds", ""), "at least one value"),
        (lambda: S.expand({}, {"sharing_rates": [1.5]}), "sharing"),
        (lambda: S.expand({}, {"cells": ["transformer"]}), "cell"),
    ],
)
def test_bad_grids_name_the_problem(call, message):
    with pytest.raises(S.SweepError, match=message):
        call()


def test_progress_reads_the_tail_of_the_metrics(tmp_path):
    assert S.progress(tmp_path, 4) == (0.0, "starting")
    lines = [
        {"kind": "log", "epoch": 1, "batch": 10, "batches": 20},
        {"kind": "epoch", "epoch": 1},
        {"kind": "log", "epoch": 2, "batch": 5, "batches": 20},
    ]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "lo'  # a cut line
    (tmp_path / "metrics.jsonl").write_text(text)
    done, where = S.progress(tmp_path, 4)
    assert done == pytest.approx(1.25) and where == "epoch 2/4 batch 5/20"


def test_the_rate_counts_a_run_restarted_from_epoch_0_from_there(tmp_path, monkeypatch):
    """A run whose metrics said 10 epochs when the sweep started, then restarted from
    epoch 0 (its checkpoint lost) and reached epoch 2: 2 epochs were trained, not -8,
    so the log shows a rate and an ETA instead of a negative rate."""
    from types import SimpleNamespace

    run = tmp_path / "r"
    run.mkdir()
    write = lambda e: (run / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": e}) + "\n")  # noqa: E731
    write(10)
    said = []
    sweep = SimpleNamespace(out=tmp_path, results={}, show_bar=False, log_every=0, log=said.append)
    view = S._View(sweep, [SimpleNamespace(name="r", config={"epochs": 100})])
    write(2)
    clock = iter([view.start + 3600.0] * 2)
    monkeypatch.setattr(S.time, "monotonic", lambda: next(clock))
    view.update([], 0)
    assert "2.00 epochs/h" in said[-1] and "eta 2940 min" in said[-1], said[-1]


# --- running, skipping, adding, resuming ---------------------------------------
def test_sweep_runs_in_parallel_skips_finished_and_adds_a_new_grid(tmp_path, corpus, capsys):
    out = tmp_path / "sweep"
    assert _sweep(out, corpus, "--cells", "lstm,gru", "--sharing-rates", "0,0.5",
                  "--epochs", "2", "--jobs", "2") == 0  # fmt: skip
    first = _summaries(out)
    assert len(first) == 4
    for text in first.values():
        summary = json.loads(text)
        assert summary["status"] == "completed" and summary["epochs"] == 2
    grid = json.loads((out / "sweep.json").read_text())
    assert len(grid["grids"]) == 1 and len(grid["grids"][0]["runs"]) == 4
    assert (out / "corpus-tiny-lstm-r0.5-plain-lr1-authors-seed1" / "train.log").read_text()

    capsys.readouterr()
    # the same grid again: nothing to do
    assert _sweep(out, corpus, "--cells", "lstm,gru", "--sharing-rates", "0,0.5",
                  "--epochs", "2", "--jobs", "2") == 0  # fmt: skip
    text = capsys.readouterr().out
    assert text.count("done ") == 4 and "nothing to do" in text
    assert _summaries(out) == first

    # a different grid in the same folder adds runs and leaves the others alone
    assert _sweep(out, corpus, "--cells", "rnn,lstm", "--sharing-rates", "0",
                  "--epochs", "2") == 0  # fmt: skip
    after = _summaries(out)
    assert len(after) == 5 and {k: after[k] for k in first} == first
    assert len(json.loads((out / "sweep.json").read_text())["grids"]) == 2


def test_same_names_with_other_settings_are_a_conflict_not_a_resume(tmp_path, corpus, capsys):
    out = tmp_path / "sweep"
    assert _sweep(out, corpus, "--cells", "rnn", "--sharing-rates", "0", "--epochs", "1") == 0
    before = _summaries(out)
    capsys.readouterr()
    assert _sweep(out, corpus, "--cells", "rnn", "--sharing-rates", "0", "--epochs", "3") == 1
    text = capsys.readouterr().out
    assert "conflict" in text and "epochs=1" in text and "another --out" in text
    assert _summaries(out) == before


def test_list_shows_states_and_trains_nothing(tmp_path, corpus, capsys):
    out = tmp_path / "sweep"
    assert _sweep(out, corpus, "--cells", "rnn,gru", "--epochs", "1", "--list") == 0
    assert capsys.readouterr().out.count("new ") == 2
    assert not out.exists()


def test_diverged_and_locked_runs_are_not_started(tmp_path, corpus, capsys):
    out = tmp_path / "sweep"
    common = ["--cells", "rnn,gru", "--sharing-rates", "0", "--epochs", "1"]
    runs = S.expand(
        {"corpus": str(corpus.resolve()), "epochs": 1},
        {"cells": ["rnn", "gru"], "sharing_rates": [0.0]},
    )
    diverged, locked = out / runs[0].name, out / runs[1].name
    diverged.mkdir(parents=True)
    (diverged / "summary.json").write_text(json.dumps({"status": "diverged"}))
    lock = S._lock(locked)  # another process trains it
    try:
        assert _sweep(out, corpus, *common) == 1
    finally:
        lock.close()
    text = capsys.readouterr().out
    assert "diverged" in text and "another process is training it" in text
    assert not (locked / "summary.json").exists() and not (diverged / "metrics.jsonl").exists()


def _sweep_cmd(out, corpus, epochs):
    return [
        sys.executable, "-m", "rrnn", "sweep", "--out", str(out), "--corpus", str(corpus),
        *SMALL, "--cells", "lstm", "--sharing-rates", "0,0.5", "--epochs", str(epochs),
        "--jobs", "2", "--variants", "tied-dropout",
    ]  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_checkpoints_every_running_run_and_a_second_call_resumes_exactly(tmp_path):
    corpus = write_corpus(tmp_path / "tiny", train_lines=3000, eval_lines=30)
    epochs = 3
    env = dict(os.environ, RRNN_CACHE_DIR=str(tmp_path / "cache"))
    ref = subprocess.run(_sweep_cmd(tmp_path / "ref", corpus, epochs), env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert ref.returncode == 0, ref.stdout + ref.stderr

    out = tmp_path / "stopped"
    proc = subprocess.Popen(_sweep_cmd(out, corpus, epochs), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(out.glob("*/metrics.jsonl"))
        if len(logs) == 2 and all(len(p.read_text().splitlines()) >= 3 for p in logs):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep finished before it could be stopped; make it longer"
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "run the same command again" in output
    for name in ("corpus-tiny-lstm-r0-tied-dropout-lr1-authors-seed1",
                 "corpus-tiny-lstm-r0.5-tied-dropout-lr1-authors-seed1"):  # fmt: skip
        assert json.loads((out / name / "summary.json").read_text())["status"] == "interrupted"
        assert (out / name / "checkpoint.pt").is_file()

    again = subprocess.run(_sweep_cmd(out, corpus, epochs), env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    started = [line for line in again.stdout.splitlines() if line.startswith("resume ")]
    assert len(started) == 2, again.stdout
    for name in _summaries(tmp_path / "ref"):
        ours = json.loads((out / name / "summary.json").read_text())
        theirs = json.loads((tmp_path / "ref" / name / "summary.json").read_text())
        assert ours["status"] == "completed"
        assert epochs_without_time(ours) == epochs_without_time(theirs)


def test_lock_is_exclusive_between_processes(tmp_path):
    held = S._lock(tmp_path / "run")
    assert held is not None
    other = open(tmp_path / "run" / S.LOCK_FILE, "a")
    with pytest.raises(OSError):
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    held.close()
    fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    other.close()


# --- Ray ---------------------------------------------------------------------
def test_ray_launcher_without_ray_says_what_to_install(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert _sweep(tmp_path / "s", corpus, "--cells", "rnn", "--epochs", "1",
                  "--launcher", "ray") == 2  # fmt: skip
    assert 'pip install "rrnn[ray]"' in capsys.readouterr().err


@pytest.mark.slow
def test_ray_launcher_on_a_local_instance_skips_and_resumes_like_the_local_one(tmp_path, corpus):
    pytest.importorskip("ray")
    out, local = tmp_path / "ray", tmp_path / "local"
    grid = ["--cells", "rnn,lstm", "--sharing-rates", "0.5", "--epochs", "2"]
    assert _sweep(local, corpus, *grid) == 0
    # one run of the grid is already finished there
    assert _sweep(out, corpus, "--cells", "rnn", "--sharing-rates", "0.5", "--epochs", "2") == 0
    finished = _summaries(out)
    assert _sweep(out, corpus, *grid, "--launcher", "ray", "--ray-address", "local") == 0
    after = _summaries(out)
    assert {k: after[k] for k in finished} == finished  # skipped, untouched
    for name in after:
        ours, theirs = (json.loads((d / name / "summary.json").read_text()) for d in (out, local))
        assert ours["status"] == "completed"
        assert epochs_without_time(ours) == epochs_without_time(theirs)


def test_a_run_that_finished_as_ctrl_c_arrived_is_not_a_failure(tmp_path):
    import signal

    from rrnn.experiments.sweep import Run, Sweep

    d = tmp_path / "run"
    d.mkdir()
    (d / "summary.json").write_text('{"status": "completed"}')
    sweep = Sweep.__new__(Sweep)
    sweep.out = tmp_path
    run = Run("run", {})
    assert sweep._outcome(run, -signal.SIGINT) == "completed"
    assert sweep._outcome(run, 130) == "completed"
    (d / "summary.json").write_text('{"status": "early-stopped"}')
    assert sweep._outcome(run, 0) == "early-stopped"
    assert sweep._outcome(run, 2).startswith("failed")  # a worker that failed to start
