"""Training, resuming (also after kill -9 and Ctrl-C), evaluation, generation."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rrnn import count_parameters
from rrnn.cli import main
from rrnn.lm import train as T
from rrnn.lm.generate import evaluate_checkpoint, generate
from rrnn.lm.model import ModelConfig, RNNModel

from .lm_helpers import epochs_without_time, small_config, write_corpus

QUIET = dict(log=lambda m: None, progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


def test_train_writes_run_and_learns(tmp_path, corpus):
    out = tmp_path / "run"
    summary = T.train(small_config(corpus), out, **QUIET)
    for name in T.RUN_FILES:
        assert (out / name).is_file(), name
    assert summary["status"] == "completed" and summary["epochs"] == 3
    hist = summary["history"]
    assert hist[-1]["train_ppl"] < hist[0]["train_ppl"]
    best = min(hist, key=lambda h: h["valid_ppl"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["valid_ppl"] == best["valid_ppl"] and summary["test_ppl"] == best["test_ppl"]
    assert summary["rnn_params"] == count_parameters("lstm", 16, 16, 2, 0.5)
    assert [h["lr"] for h in hist] == [T.cosine_lr(1.0, e, 3) for e in range(3)]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert all(
        {"loss", "ppl", "lr", "tokens_per_s", "elapsed"} <= set(r)
        for r in records
        if r["kind"] == "log"
    )
    saved = json.loads((out / "summary.json").read_text())
    assert saved["test_ppl"] == summary["test_ppl"]
    machine = saved["machine"]  # what the numbers were measured on
    assert machine["torch"] == torch.__version__ and machine["threads"] == 1
    assert machine["device"] == "cpu" and machine["processes"] == 1 and machine["cpu"]
    # checkpoints load with weights_only=True; best.pt holds the best epoch
    best_ckpt = torch.load(out / "best.pt", weights_only=True)
    assert best_ckpt["epoch"] == summary["best_epoch"]


def test_deterministic_with_seed(tmp_path, corpus):
    a = T.train(small_config(corpus), tmp_path / "a", **QUIET)
    b = T.train(small_config(corpus), tmp_path / "b", **QUIET)
    assert epochs_without_time(a) == epochs_without_time(b)


def _spawn(corpus, out, epochs, extra=()):
    cmd = [
        sys.executable,
        "-m",
        "rrnn.cli",
        "train",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--cell",
        "gru",
        "--layers",
        "2",
        "--embedding-size",
        "32",
        "--hidden-size",
        "32",
        "--batch-size",
        "4",
        "--eval-batch-size",
        "4",
        "--bptt",
        "8",
        "--threads",
        "1",
        "--seed",
        "5",
        "--epochs",
        str(epochs),
        "--log-interval",
        "5",
        *extra,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return cmd, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _wait_for(predicate, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError


def _epochs_done(out):
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"kind": "epoch"' in line for line in path.read_text().splitlines())


@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_same_numbers(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", train_lines=1500)
    epochs = 6
    cmd, ref = _spawn(corpus, tmp_path / "ref", epochs)
    assert ref.wait(timeout=300) == 0, ref.stdout.read().decode()
    reference = json.loads((tmp_path / "ref" / "summary.json").read_text())

    out = tmp_path / "killed"
    cmd, proc = _spawn(corpus, out, epochs)
    alive = _wait_for(lambda: _epochs_done(out) >= 2, proc)
    assert alive, "the run finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = torch.load(out / "checkpoint.pt", weights_only=True)
    # killed after >= 2 epoch records; the checkpoint may lag the last record by one
    assert 1 <= partial["epoch"] < epochs
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "summary.json").read_text())
    assert epochs_without_time(resumed) == epochs_without_time(reference)
    metrics = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in m for m in metrics) == epochs  # no duplicate epoch records


@pytest.mark.slow
def test_ctrl_c_checkpoints_mid_epoch_and_resume_is_exact(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", train_lines=1500)
    epochs = 3
    cmd, ref = _spawn(corpus, tmp_path / "ref", epochs, ["--variant", "tied-dropout"])
    assert ref.wait(timeout=300) == 0
    reference = json.loads((tmp_path / "ref" / "summary.json").read_text())

    out = tmp_path / "stopped"
    cmd, proc = _spawn(corpus, out, epochs, ["--variant", "tied-dropout"])

    def logged():
        path = out / "metrics.jsonl"
        return path.is_file() and len(path.read_text().splitlines()) >= 3

    assert _wait_for(logged, proc)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "--resume" in output
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["batch"] > 0 and state["hidden"] is not None  # a mid-epoch checkpoint
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "summary.json").read_text())
    assert epochs_without_time(resumed) == epochs_without_time(reference)


def test_refuses_existing_run_and_conflicting_resume(tmp_path, corpus):
    out = tmp_path / "run"
    T.train(small_config(corpus, epochs=1), out, **QUIET)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        T.train(small_config(corpus, epochs=1), out, **QUIET)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten
    with pytest.raises(T.CheckpointError, match="--cell 'gru' \\(the run has 'lstm'\\)"):
        T.train(
            small_config(corpus, epochs=1, cell="gru"), out, resume=True, explicit={"cell"}, **QUIET
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        T.train(small_config(corpus), tmp_path / "empty", resume=True, **QUIET)
    T.train(small_config(corpus, epochs=1, seed=9), out, overwrite=True, **QUIET)
    assert (out / "checkpoint.pt").read_bytes() != before["checkpoint.pt"]


def test_divergence_stops_with_last_good_checkpoint(tmp_path, corpus, monkeypatch):
    out = tmp_path / "run"
    real = T.cosine_lr
    monkeypatch.setattr(T, "cosine_lr", lambda base, e, n: real(base, e, n) if e == 0 else 1e38)
    with pytest.raises(T.TrainingDiverged, match="epoch 2.*after epoch 1\\) is intact"):
        T.train(small_config(corpus, epochs=3, clip=1e30), out, **QUIET)
    ckpt = T.load_checkpoint(out / "checkpoint.pt")
    assert ckpt.progress.epoch == 1 and all(torch.isfinite(p).all() for p in ckpt.model.values())


def test_divergence_in_the_first_epoch_cites_no_checkpoint(tmp_path, corpus, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(T, "cosine_lr", lambda base, e, n: 1e38)
    with pytest.raises(T.TrainingDiverged, match="before its first checkpoint") as err:
        T.train(small_config(corpus, epochs=2, clip=1e30), out, **QUIET)
    assert "checkpoint.pt" not in str(err.value) and not (out / "checkpoint.pt").exists()
    assert json.loads((out / "summary.json").read_text())["stop_reason"].startswith("diverged:")


@pytest.mark.parametrize("clip, advice", [(1e30, "Lower --lr (or --clip, now 1e+30)"), (0.0, "set --clip (> 0)")])
def test_divergence_advice_follows_the_clip_in_use(tmp_path, corpus, monkeypatch, clip, advice):
    """A run that clipped its gradients is not told to set --clip (the campaign's
    lr 10 runs diverged with clip 0.25)."""
    monkeypatch.setattr(T, "cosine_lr", lambda base, e, n: 1e38)
    with pytest.raises(T.TrainingDiverged) as err:
        T.train(small_config(corpus, epochs=1, clip=clip), tmp_path / "run", **QUIET)
    assert advice in str(err.value)


def test_config_errors():
    with pytest.raises(ValueError, match="tied weights need embedding size == hidden size"):
        ModelConfig(vocab_size=10, embedding_size=8, hidden_size=16, tie_weights=True)
    with pytest.raises(ValueError, match="cell must be one of rnn, gru, lstm, got 'tcn'"):
        ModelConfig(vocab_size=10, cell="tcn")
    with pytest.raises(ValueError, match="sharing_rate"):
        ModelConfig(vocab_size=10, sharing_rate=1.5)
    with pytest.raises(ValueError, match="backend='torch'.*sharing_rate must be 0"):
        ModelConfig(vocab_size=10, backend="torch", sharing_rate=0.5)
    with pytest.raises(ValueError, match="variant"):
        T.TrainConfig(variant="fancy")


def test_tied_dropout_variant_and_torch_backend():
    cfg = T.TrainConfig(variant="tied-dropout")
    m = cfg.model_config(50)
    assert m.tie_weights and m.dropout == 0.2
    model = RNNModel(m)
    assert model.decoder.weight is model.encoder.weight
    assert model.rnn.dropout == 0.2
    # the classical torch.nn model at r = 0 has exactly the restricted model's count
    a = RNNModel(ModelConfig(vocab_size=50, sharing_rate=0.0))
    b = RNNModel(ModelConfig(vocab_size=50, sharing_rate=0.0, backend="torch"))
    assert a.total_parameters() == b.total_parameters()
    assert isinstance(b.rnn, torch.nn.LSTM)


def test_eval_streaming_and_checkpoint_errors(tmp_path, corpus):
    out = tmp_path / "run"
    summary = T.train(small_config(corpus, epochs=2), out, **QUIET)
    best = evaluate_checkpoint(out / "best.pt", "valid", log=lambda m: None)
    assert best["ppl"] == pytest.approx(summary["valid_ppl"], rel=1e-9)
    # batch size 1: the exact streaming value, independent of the window length
    a = evaluate_checkpoint(out / "best.pt", "test", batch_size=1, bptt=5, log=lambda m: None)
    b = evaluate_checkpoint(out / "best.pt", "test", batch_size=1, bptt=10_000, log=lambda m: None)
    assert a["ppl"] == pytest.approx(b["ppl"], rel=1e-5)
    from rrnn.lm import data as D

    n_test = D.load_corpus(corpus_dir=corpus, log=lambda m: None).test.numel()
    assert a["tokens"] == n_test - 1
    # not a checkpoint
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(T.CheckpointError, match="not a readable rrnn checkpoint"):
        evaluate_checkpoint(junk)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(T.CheckpointError, match="not an rrnn language-model checkpoint"):
        T.load_checkpoint(tmp_path / "other.pt")
    # a checkpoint whose weights belong to another model
    ckpt = torch.load(out / "best.pt", weights_only=True)
    ckpt["model_config"]["sharing_rate"] = 0.9
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(T.CheckpointError, match="do not fit its model config"):
        evaluate_checkpoint(tmp_path / "mismatch.pt", log=lambda m: None)
    # the corpus changed since training
    (corpus / "test.txt").write_text(" the cat sees a car \n" * 30)
    with pytest.raises(T.CheckpointError, match="trained on other data"):
        evaluate_checkpoint(out / "best.pt", log=lambda m: None)


def test_generate(tmp_path, corpus):
    out = tmp_path / "run"
    T.train(small_config(corpus, epochs=2), out, **QUIET)
    a = generate(out / "best.pt", words=20, seed=1)
    assert a == generate(out / "best.pt", words=20, seed=1)
    assert len(a.split()) <= 20 and a != generate(out / "best.pt", words=20, seed=2)
    text = generate(out / "best.pt", words=5, seed=1, prompt="the cat")
    assert text.startswith("the cat") and len(text.split()) <= 7
    with pytest.raises(ValueError, match=r"\['zebra'\] are not in the vocabulary"):
        generate(out / "best.pt", words=5, prompt="the zebra")
    with pytest.raises(ValueError, match="temperature"):
        generate(out / "best.pt", temperature=0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_generation_streams_the_same_text_as_the_reference_path(tmp_path, corpus, monkeypatch, cell):
    """rrnn generate steps one token at a time inside frozen(), through the stack
    operators (rrnn::gru_stream, rrnn::lstm_stream: one call per token), and
    samples the same words as torch's own kernels on the gathered weights (the
    operators' numbers are checked against torch.nn in test_kernels.py)."""
    from .op_log import OpLog

    out = tmp_path / "run"
    T.train(small_config(corpus, epochs=1, cell=cell), out, **QUIET)
    with OpLog() as ops:
        streamed = generate(out / "best.pt", words=30, seed=4)
    assert ops.names.count(f"rrnn.{cell}_stream.default") == 31  # the prompt's token, each word
    monkeypatch.setenv("RRNN_KERNEL", "reference")
    assert generate(out / "best.pt", words=30, seed=4) == streamed


def test_cli_train_eval_generate(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--eval-batch-size",
        "4",
        "--bptt",
        "8",
        "--layers",
        "1",
        "--embedding-size",
        "8",
        "--hidden-size",
        "8",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    assert "test ppl" in capsys.readouterr().out
    assert main(args) == 2  # existing run, refused
    assert "already holds a run" in capsys.readouterr().err
    assert main(["eval", str(out / "checkpoint.pt"), "--split", "valid"]) == 0
    assert "valid ppl" in capsys.readouterr().out
    assert main(["generate", str(out / "checkpoint.pt"), "--words", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip()
    assert (
        main(
            [
                "train",
                "--corpus",
                str(corpus),
                "--dry-run",
                "--batch-size",
                "4",
                "--eval-batch-size",
                "4",
                "--bptt",
                "8",
                "--embedding-size",
                "8",
                "--hidden-size",
                "8",
                "--variant",
                "tied-dropout",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    with pytest.raises(SystemExit):
        main(["train", "--cell", "transformer"])
    assert (
        main(
            [
                "train",
                "--corpus",
                str(corpus),
                "--out",
                str(tmp_path / "big"),
                "--batch-size",
                "4000",
            ]
        )
        == 2
    )
    assert "fewer than --batch-size" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_train_on_real_ptb_dry_run(tmp_path):
    root = os.environ.get("RRNN_DATA_DIR")
    if not root or not (Path(root) / "ptb" / "train.txt").is_file():
        pytest.skip("real PTB not found (set RRNN_DATA_DIR)")
    cfg = T.dry_run_config(
        T.TrainConfig(dataset="ptb", threads=2, layers=1, hidden_size=32, embedding_size=32)
    )
    summary = T.train(cfg, tmp_path / "run", **QUIET)
    assert summary["status"] == "completed" and summary["test_ppl"] < 10_000 * 1.5


@pytest.mark.parametrize("tied", [True, False])
def test_initialisation_schemes(tied):
    H = 32
    model = RNNModel(ModelConfig(vocab_size=500, embedding_size=H, hidden_size=H, tie_weights=tied))
    bound = 1 / H**0.5
    model.initialize("authors")  # PyTorch's defaults, as the paper's published runs
    assert 0.9 < model.encoder.weight.std().item() < 1.1  # N(0, 1)
    assert model.decoder.bias.abs().max().item() <= bound and model.decoder.bias.std() > 0
    if not tied:
        assert model.decoder.weight.abs().max().item() <= bound
    for p in model.rnn.parameters():
        assert p.numel() == 0 or p.abs().max().item() <= bound
    model.initialize("uniform")  # the paper's text
    assert model.encoder.weight.abs().max().item() <= 0.1
    assert model.encoder.weight.std().item() > 0.05
    assert model.decoder.weight.abs().max().item() <= 0.1
    assert torch.count_nonzero(model.decoder.bias) == 0
    with pytest.raises(ValueError, match="init must be one of"):
        model.initialize("xavier")


def test_init_flag_default_and_old_configs(tmp_path, corpus):
    assert T.TrainConfig().init == "authors"
    # a config written before --init existed was trained with uniform(-0.1, 0.1)
    old = T.TrainConfig().to_dict()
    del old["init"]
    assert T.TrainConfig.from_dict(old).init == "uniform"
    with pytest.raises(ValueError, match="init must be one of"):
        T.TrainConfig(init="zeros")
    runs = {}
    for init in ("authors", "uniform"):
        cfg = small_config(corpus, init=init, epochs=1, variant="tied-dropout", embedding_size=16)
        T.train(cfg, tmp_path / init, **QUIET)
        stored = json.loads((tmp_path / init / "config.json").read_text())
        assert stored["train"]["init"] == init
        runs[init] = torch.load(tmp_path / init / "checkpoint.pt", weights_only=True)
    assert not torch.equal(
        runs["authors"]["model"]["encoder.weight"], runs["uniform"]["model"]["encoder.weight"]
    )
