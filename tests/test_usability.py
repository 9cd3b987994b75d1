"""The command line and the layers as a new user meets them: relocatable runs,
divergence, strict JSON, and a clear error for every bad input."""

import json
import os
import shutil
import warnings

import pytest
import torch

import rrnn
from rrnn.cli import main
from rrnn.lm import train as T

from .cpu_features import skip_unless_torch_autocasts
from .lm_helpers import TINY, write_corpus


def _no_constants(name):
    raise ValueError(f"not strict JSON: {name}")


def strict(path):
    """json.loads that refuses Infinity and NaN, as strict parsers do."""
    return json.loads(path.read_text(), parse_constant=_no_constants)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "work" / "c", train_lines=150, eval_lines=20)


def _train(corpus, out, *flags):
    return main(["train", "--corpus", str(corpus), "--out", str(out), *TINY, *flags])


# --- runs that can be found from anywhere ---------------------------------------
def test_a_run_is_found_from_any_folder_and_its_corpus_can_move(
    tmp_path, corpus, monkeypatch, capsys
):
    monkeypatch.chdir(corpus.parent)
    assert main(["train", "--corpus", "c", "--out", "good", *TINY, "--epochs", "1"]) == 0
    run = (corpus.parent / "good").resolve()
    config = json.loads((run / "config.json").read_text())["train"]
    assert config["corpus"] == str(corpus.resolve()) and config["dataset"] is None
    summary = strict(run / "summary.json")
    assert summary["corpus"] == str(corpus.resolve()) and summary["dataset"] is None

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", str(run / "best.pt"), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["ppl"]
    assert main(["train", "--out", str(run), "--resume"]) == 0  # finds its corpus too

    moved = tmp_path / "moved"
    shutil.move(str(corpus), moved)
    assert main(["eval", str(run / "best.pt")]) == 2
    err = capsys.readouterr().err
    assert str(corpus.resolve()) in err and "--corpus DIR" in err
    assert main(["eval", str(run / "best.pt"), "--corpus", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] == first
    other = write_corpus(tmp_path / "other", train_lines=150, eval_lines=20, seed=5)
    assert main(["eval", str(run / "best.pt"), "--corpus", str(other)]) == 2
    assert "other data" in capsys.readouterr().err


# --- divergence and strict JSON ------------------------------------------------
@pytest.mark.parametrize(
    "flags",
    [["--lr", "1e6", "--clip", "1e9"], ["--lr", "1e6", "--clip", "0"]],
    ids=["huge-lr", "clip-off"],
)
def test_divergence_stops_the_run_and_every_file_stays_strict_json(tmp_path, corpus, flags, capsys):
    out = tmp_path / "run"
    code = _train(corpus, out, "--epochs", "3", *flags)
    assert code == 3
    assert "training diverged" in capsys.readouterr().err
    summary = strict(out / "summary.json")
    assert summary["status"] == "diverged" and summary["best_epoch"] is None
    assert not (out / "best.pt").exists()  # no diverged epoch is ever the best
    metrics = out / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        json.loads(line, parse_constant=_no_constants)
    strict(out / "config.json")


def test_a_loss_far_above_a_uniform_guess_is_divergence(tmp_path, corpus, monkeypatch):
    # a finite but absurd loss (the --clip -1 case of the issue gave 478) stops the run
    real = T.F.cross_entropy
    calls = {"n": 0}

    def inflated(logits, targets, *a, **k):
        calls["n"] += 1
        loss = real(logits, targets, *a, **k)
        return loss * 100 if calls["n"] > 3 and k.get("reduction") is None else loss

    monkeypatch.setattr(T.F, "cross_entropy", inflated)
    # the default fused decoder + loss of the training loop, likewise inflated
    import rrnn.lm.model as M

    real_fused = M.linear_cross_entropy

    def inflated_fused(*a, **k):
        calls["n"] += 1
        loss = real_fused(*a, **k)
        return loss * 100 if calls["n"] > 3 else loss

    monkeypatch.setattr(M, "linear_cross_entropy", inflated_fused)
    with pytest.raises(T.TrainingDiverged, match="limit 3 log V"):
        T.train(T.TrainConfig(dataset=None, corpus=str(corpus), layers=1, embedding_size=8,
                              hidden_size=8, batch_size=4, eval_batch_size=4, bptt=8,
                              epochs=1, threads=1), tmp_path / "run", log=lambda m: None,
                progress=False)  # fmt: skip
    assert strict(tmp_path / "run" / "summary.json")["status"] == "diverged"


def test_overflowing_perplexity_is_null_with_the_loss_beside_it():
    assert T.json_ppl(800.0) is None and T.json_ppl(float("nan")) is None
    assert T.json_ppl(1.0) == pytest.approx(2.718281828)


# --- flags checked before anything is created ----------------------------------
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--threads", "-2"], "threads must be a positive integer"),
        (["--threads", "0"], "threads must be a positive integer"),
        (["--clip", "-1"], "clip must be a number >= 0"),
        (["--momentum", "-0.5"], "momentum must be a number >= 0"),
        (["--sharing-rate", "1.5"], "sharing_rate must be in"),
        (["--resume", "--overwrite"], "pass one of them"),
        (["--lr", "nan"], "lr must be a positive number"),
    ],
)
def test_rejected_train_says_why_and_creates_nothing(tmp_path, corpus, flags, message, capsys):
    out = tmp_path / "never"
    assert _train(corpus, out, *flags) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_rejected_by_the_corpus_creates_nothing(tmp_path, corpus, capsys):
    out = tmp_path / "never"
    assert _train(corpus, out, "--batch-size", "100000") == 2
    assert "--batch-size" in capsys.readouterr().err
    assert not out.exists()


def test_clip_zero_turns_clipping_off(tmp_path, corpus):
    assert _train(corpus, tmp_path / "run", "--clip", "0", "--epochs", "1") == 0
    assert strict(tmp_path / "run" / "config.json")["train"]["clip"] == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "eval", "generate"])
def test_device_cuda_without_cuda_is_a_clear_error_in_every_command(
    tmp_path, corpus, command, capsys
):
    if command == "train":
        code = _train(corpus, tmp_path / "run", "--device", "cuda")
    else:
        code = main([command, str(tmp_path / "missing.pt"), "--device", "cuda"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no CUDA" in err and "Traceback" not in err


def test_eval_sizes_must_be_positive(tmp_path, corpus, capsys):
    assert _train(corpus, tmp_path / "run", "--epochs", "1") == 0
    for flag in ("--batch-size", "--bptt"):
        assert main(["eval", str(tmp_path / "run" / "best.pt"), flag, "0"]) == 2
        assert f"{flag} must be a positive integer" in capsys.readouterr().err
    # too large for the split: the message is about streams, not a bptt of 1
    assert main(["eval", str(tmp_path / "run" / "best.pt"), "--batch-size", "100000"]) == 2
    err = capsys.readouterr().err
    assert "fewer than 2 x --batch-size = 200,000" in err and "bptt" not in err


def test_dropout_with_one_layer_warns_as_torch_nn(corpus):
    with pytest.warns(UserWarning, match="no effect with one recurrent layer"):
        T.TrainConfig(dataset=None, corpus=str(corpus), layers=1, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        T.TrainConfig(dataset=None, corpus=str(corpus), layers=2, dropout=0.5)


def test_dry_run_keeps_nothing(tmp_path, corpus, monkeypatch, capsys):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    assert main(["train", "--corpus", str(corpus), *TINY, "--dry-run"]) == 0
    assert "nothing was kept" in capsys.readouterr().out
    assert list(temp.iterdir()) == []


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(T.torch, "get_num_threads", lambda: cores)
    monkeypatch.setattr(T.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert T.default_threads() == cores  # an idle machine: torch's default
    monkeypatch.setattr(T.os, "getloadavg", lambda: (float(cores + 3), 0.0, 0.0))
    assert T.default_threads() == 1  # every core busy: one thread


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"rrnn {rrnn.__version__}\n"


# --- files that are not what they should be -------------------------------------
def test_junk_checkpoint_error_never_suggests_an_unsafe_load(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04not a checkpoint at all")
    assert main(["eval", str(junk)]) == 2
    err = capsys.readouterr().err
    assert str(junk) in err and "weights_only" not in err and "truncated" in err


def test_binary_corpus_file_is_named(tmp_path, capsys):
    c = write_corpus(tmp_path / "bin", train_lines=50, eval_lines=10)
    (c / "train.txt").write_bytes(b"hello \xce\xff\xfe world\n")
    assert _train(c, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert str(c / "train.txt") in err and "UTF-8" in err


# --- the layers, as torch.nn checks them ----------------------------------------
@pytest.mark.parametrize("rate", ["0.5", True, b"1"])
def test_sharing_rate_must_be_a_real_number(rate):
    with pytest.raises(TypeError, match="real number"):
        rrnn.RestrictedLSTM(10, 10, sharing_rate=rate)


@pytest.mark.parametrize("cls", [rrnn.RestrictedRNN, rrnn.RestrictedGRU, rrnn.RestrictedLSTM])
def test_empty_sequence_and_dtype_mismatch_say_what_to_change(cls):
    m = cls(10, 10, 2, sharing_rate=0.5)
    with pytest.raises(ValueError, match="sequence length to be larger than 0"):
        m(torch.randn(0, 3, 10))
    # torch.nn's classes: ValueError for a layer's input, RuntimeError for its state
    # and for the cells; the message names the fix
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match weight "
                       r"dtype \(torch.float32\). Convert input: input.to\(torch.float32\)"):
        m(torch.randn(4, 3, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="nn.Embedding"):
        m(torch.randint(0, 5, (4, 3, 10)))
    h = torch.zeros(2, 3, 10, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"h0 dtype \(torch.float64\) does not match"):
        m(torch.randn(1, 3, 10), (h, h) if cls is rrnn.RestrictedLSTM else h)
    cell = getattr(rrnn, cls.__name__ + "Cell")(10, 10, sharing_rate=0.5)
    with pytest.raises(RuntimeError, match=r"input dtype \(torch.float64\) does not match"):
        cell(torch.randn(3, 10, dtype=torch.float64))


@pytest.mark.parametrize("cls", [rrnn.RestrictedGRU, rrnn.RestrictedLSTM])
def test_autocast_matches_torch_nn(cls):
    skip_unless_torch_autocasts(cls.__name__.removeprefix("Restricted").lower())
    torch.manual_seed(0)
    m = cls(20, 20, 2, sharing_rate=0.5)
    ref = m.to_torch()
    x = torch.randn(6, 4, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = m(x)[0], ref(x)[0]
    assert ours.dtype == theirs.dtype
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=0, atol=0)
