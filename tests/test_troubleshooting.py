"""The README's troubleshooting table, row by row: each row's messages are produced
by the condition the row describes, as printed. A row without a trigger here, or a
message the code no longer prints, fails."""

import errno
import json
import re
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

import rrnn
from rrnn import fileio
from rrnn.cli import main
from rrnn.experiments import sweep as S
from rrnn.lm import data as D
from rrnn.lm import train as T

from .lm_helpers import TINY, write_corpus

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDERS = {"N", "X", "V", "DIR", "NAME"}  # in the table: any one word


def rows() -> list[list[str]]:
    """The quoted messages of each row of the table (first column's code spans)."""
    text = README.read_text()
    table = text[text.index("## Troubleshooting") : text.index("## Tests")]
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]  # no header
    return [re.findall(r"`([^`]+)`", line.split(" | ")[0]) for line in lines]


def pattern(message: str) -> str:
    out = re.escape(message).replace(r"\.\.\.", ".*?")
    for word in PLACEHOLDERS:
        out = re.sub(rf"(?<![\w-]){word}(?![\w-])", r"\\S+", out)
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "c", train_lines=150, eval_lines=20)


def _train(corpus, out, *flags):
    return main(["train", "--corpus", str(corpus), "--out", str(out), *TINY, *flags])


def _error(fn) -> str:
    try:
        fn()
    except Exception as err:  # noqa: BLE001  the message is what is tested
        return str(err)
    raise AssertionError("no error")


# --- one trigger per row, keyed by the row's first message -----------------------------
def missing_data(tmp_path, corpus, capsys, monkeypatch):
    missing = _error(lambda: D.load_corpus("ptb", data_root=tmp_path / "none", download=False))
    (tmp_path / "bad" / "ptb").mkdir(parents=True)
    for split in D.SPLITS:
        (tmp_path / "bad" / "ptb" / f"{split}.txt").write_text("not ptb\n")
    return missing + _error(lambda: D.load_corpus("ptb", data_root=tmp_path / "bad", download=False))


def binary_corpus(tmp_path, corpus, capsys, monkeypatch):
    (corpus / "train.txt").write_bytes(b"hello \xce\xff\xfe world\n")
    assert _train(corpus, tmp_path / "run") == 2
    return capsys.readouterr().err


def diverged(tmp_path, corpus, capsys, monkeypatch):
    assert _train(corpus, tmp_path / "run", "--epochs", "2", "--lr", "1e6", "--clip", "0") == 3
    return capsys.readouterr().err


def trained(tmp_path, corpus, capsys):
    assert _train(corpus, tmp_path / "run", "--epochs", "1") == 0
    capsys.readouterr()
    return tmp_path / "run"


def holds_a_run(tmp_path, corpus, capsys, monkeypatch):
    run = trained(tmp_path, corpus, capsys)
    assert _train(corpus, run, "--epochs", "1") == 2
    return capsys.readouterr().err


def other_settings(tmp_path, corpus, capsys, monkeypatch):
    run = trained(tmp_path, corpus, capsys)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 2
    return capsys.readouterr().err


def other_data(tmp_path, corpus, capsys, monkeypatch):
    run = trained(tmp_path, corpus, capsys)
    with open(corpus / "test.txt", "a") as f:
        f.write(" the cat sees the fish \n")
    assert main(["eval", str(run / "checkpoint.pt")]) == 2
    return capsys.readouterr().err


def moved_corpus(tmp_path, corpus, capsys, monkeypatch):
    run = trained(tmp_path, corpus, capsys)
    shutil.move(corpus, tmp_path / "moved")
    assert main(["eval", str(run / "checkpoint.pt")]) == 2
    return capsys.readouterr().err


def junk_checkpoint(tmp_path, corpus, capsys, monkeypatch):
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04not a checkpoint")
    assert main(["eval", str(tmp_path / "junk.pt")]) == 2
    return capsys.readouterr().err


def no_cuda(tmp_path, corpus, capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert _train(corpus, tmp_path / "run", "--device", "cuda") == 2
    return capsys.readouterr().err


def bad_flags(tmp_path, corpus, capsys, monkeypatch):
    assert _train(corpus, tmp_path / "a", "--threads", "0") == 2
    assert _train(corpus, tmp_path / "b", "--clip", "-1") == 2
    return capsys.readouterr().err


def ignored_option(tmp_path, corpus, capsys, monkeypatch):
    assert _train(corpus, tmp_path / "a", "--compress", "dense", "--prune-schedule", "cubic") == 2
    return capsys.readouterr().err


def os_conditions(tmp_path, corpus, capsys, monkeypatch):
    full = fileio.explain_os_error(OSError(errno.ENOSPC, "No space left on device", "x"))
    assert _train(corpus, tmp_path / ("x" * 300), "--epochs", "1") == 1

    def refuse(out, replace):
        raise PermissionError(errno.EACCES, "Permission denied", str(out))

    monkeypatch.setattr(T, "_create_out", refuse)
    assert _train(corpus, tmp_path / "run", "--epochs", "1") == 1
    return full + capsys.readouterr().err


def damaged(tmp_path, corpus, capsys, monkeypatch):
    (tmp_path / "sweep.json").write_text("{")
    said = []
    S.record_grid(tmp_path, {}, [], log=said.append)
    return "\n".join(said)


def one_layer_dropout(tmp_path, corpus, capsys, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        T.TrainConfig(layers=1, dropout=0.5)
    return "\n".join(str(w.message) for w in caught)


def empty_sequence(tmp_path, corpus, capsys, monkeypatch):
    return _error(lambda: rrnn.RestrictedLSTM(3, 4)(torch.zeros(0, 2, 3)))


def dtype_mismatch(tmp_path, corpus, capsys, monkeypatch):
    return _error(lambda: rrnn.RestrictedLSTM(3, 4)(torch.zeros(2, 1, 3, dtype=torch.float64)))


def sharing_rate(tmp_path, corpus, capsys, monkeypatch):
    return _error(lambda: rrnn.RestrictedLSTM(3, 4, sharing_rate="0.5"))


def sweep_data(tmp_path, corpus, capsys, monkeypatch):
    assert main(["sweep", "--out", str(tmp_path / "s"), "--datasets", "NAME", *TINY]) == 2
    (corpus / "test.txt").unlink()
    assert main(["sweep", "--out", str(tmp_path / "s"), "--corpus", str(corpus), *TINY]) == 2
    return capsys.readouterr().err


def sweep_args(out, corpus, epochs):
    return ["sweep", "--out", str(out), "--corpus", str(corpus), *TINY, "--epochs", str(epochs)]


def sweep_conflict(tmp_path, corpus, capsys, monkeypatch):
    assert main(sweep_args(tmp_path / "s", corpus, 1)) == 0
    main(sweep_args(tmp_path / "s", corpus, 2))
    return capsys.readouterr().out


def sweep_busy(tmp_path, corpus, capsys, monkeypatch):
    (run,) = S.expand({"corpus": str(corpus), "epochs": 1}, {})
    held = S._lock(tmp_path / "s" / run.name)
    held.write("1\n")  # pid 1 is always alive
    held.flush()
    main(sweep_args(tmp_path / "s", corpus, 1))
    held.close()
    return capsys.readouterr().out


def ray_address(tmp_path, corpus, capsys, monkeypatch):
    return _error(lambda: S._reachable("127.0.0.1:9"))


def missing_extras(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    sweep = S.Sweep(tmp_path / "s", S.expand({"corpus": str(corpus)}, {}), log=print)
    ray = _error(sweep.run_ray)
    run = trained(tmp_path, corpus, capsys)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    return ray + capsys.readouterr().out + capsys.readouterr().err


TRIGGERS = {
    "ptb: missing train.txt": missing_data,
    "... is not UTF-8 text (line N ...)": binary_corpus,
    "training diverged: the loss is X (limit 3 log V = ...)": diverged,
    "... already holds a run": holds_a_run,
    "cannot resume with different settings": other_settings,
    "... was trained on other data": other_data,
    "... was trained on the corpus in DIR; pass --corpus DIR": moved_corpus,
    "... is not a readable rrnn checkpoint": junk_checkpoint,
    "--device cuda: ... no CUDA": no_cuda,
    "threads must be a positive integer": bad_flags,
    "--prune-schedule is an option of --compress prune": ignored_option,
    "no space left on the device": os_conditions,
    "warning: ... is damaged (...); kept as ....corrupt": damaged,
    "dropout 0.5 has no effect with one recurrent layer": one_layer_dropout,
    "Expected sequence length to be larger than 0": empty_sequence,
    "input dtype (torch.float64) does not match weight dtype (torch.float32)": dtype_mismatch,
    "sharing_rate must be a real number in [0, 1]": sharing_rate,
    "unknown dataset 'NAME'": sweep_data,
    "conflict NAME: holds other settings": sweep_conflict,
    "another process is training it (worker pid N": sweep_busy,
    "--ray-address ...: no Ray cluster answered within 15 s": ray_address,
    "--launcher ray needs Ray": missing_extras,
}


def test_every_row_has_a_trigger():
    assert [row[0] for row in rows()] == list(TRIGGERS)


@pytest.mark.parametrize("row", rows(), ids=lambda row: row[0][:40])
def test_the_row_is_what_the_code_prints(row, tmp_path, corpus, capsys, monkeypatch):
    output = TRIGGERS[row[0]](tmp_path, corpus, capsys, monkeypatch)
    for message in row:
        assert re.search(pattern(message), output, re.S), (message, output)


def test_a_placeholder_matches_one_word_and_nothing_else():
    assert re.fullmatch(pattern("line N ..."), "line 3, byte 0")
    assert not re.search(pattern("worker pid N"), "worker pid")
    assert json.dumps(pattern("RNN")) == '"RNN"'  # N inside a word stays a letter
