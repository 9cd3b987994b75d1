"""`rrnn export`: every method's checkpoint to ONNX, run in ONNX Runtime on the
held-out split beside PyTorch, the restricted model in its compact form."""

import json

import pytest

from rrnn.cli import main

from .lm_helpers import write_corpus

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = [
    "--layers", "2", "--embedding-size", "16", "--hidden-size", "16", "--batch-size", "4",
    "--eval-batch-size", "4", "--bptt", "8", "--threads", "1", "--epochs", "1",
    "--variant", "plain",
]  # fmt: skip
METHODS = {
    "restrict": ["--sharing-rate", "0.5"],
    "dense": ["--sharing-rate", "0.5", "--compress", "dense"],
    "lowrank": ["--sharing-rate", "0.5", "--compress", "lowrank"],
    "projection": ["--sharing-rate", "0.5", "--compress", "lowrank", "--lowrank", "projection"],
    "projection-gru": ["--cell", "gru", "--sharing-rate", "0.5", "--compress", "lowrank",
                       "--lowrank", "projection"],  # fmt: skip
    "prune": ["--sharing-rate", "0.5", "--compress", "prune", "--compress-start", "0.2",
              "--prune-freq", "2"],  # fmt: skip
    "iss": ["--sharing-rate", "0.5", "--compress", "iss", "--compress-end", "0.5"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    corpus = write_corpus(root / "c", train_lines=150, eval_lines=20)
    for name, flags in METHODS.items():
        code = main(["train", "--corpus", str(corpus), "--out", str(root / name), *TINY, *flags])
        assert code == 0, name
    return root


def _export(runs, name, capsys, *flags):
    out = runs / f"{name}{'-'.join(flags)}.onnx"
    assert main(["export", str(runs / name / "best.pt"), "--out", str(out),
                 "--batch-size", "4", "--json", *flags]) == 0  # fmt: skip
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_exports_with_parity(runs, method, capsys):
    r = _export(runs, method, capsys)
    assert r["relative"] < 1e-4, r  # float32 in ONNX Runtime against PyTorch
    forms = {"restrict": "CompactRNN", "lowrank": "FactoredRNN", "projection": "ProjectedLSTM"}
    if method in forms:
        assert r["recurrent"] == forms[method]
    assert ("masked dense" in (r["weights"] or "")) == (method == "prune")  # said in the output


def test_the_restricted_export_holds_less_than_its_classical_twin(runs, capsys):
    restricted = _export(runs, "restrict", capsys)
    dense_full = runs / "full"  # the same model exported at r = 0 for the comparison
    corpus = runs / "c"
    assert main(["train", "--corpus", str(corpus), "--out", str(dense_full), *TINY,
                 "--sharing-rate", "0"]) == 0  # fmt: skip
    capsys.readouterr()
    classical = _export(runs, "full", capsys)
    assert restricted["held_bytes"] < classical["held_bytes"]


def test_int8_and_windows(runs, capsys):
    r = _export(runs, "restrict", capsys, "--int8", "--window", "5")
    assert r["int8"] and r["window"] == 5 and r["relative"] < 0.05  # the cost, measured


def test_without_a_checkpoint_or_with_bad_sizes_it_says_so(runs, tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert main(["export", str(runs / "restrict" / "best.pt"), "--out", str(tmp_path / "x.onnx"),
                 "--window", "0"]) == 2  # fmt: skip
    assert "--window must be a positive integer" in capsys.readouterr().err


def test_the_exported_file_alone_generates_the_same_text(runs, capsys):
    _export(runs, "restrict", capsys)  # window 1, the vocabulary in the file's metadata
    onnx_file = runs / "restrict.onnx"
    assert main(["generate", str(onnx_file), "--words", "15", "--seed", "4"]) == 0
    from_onnx = capsys.readouterr().out
    assert main(["generate", str(runs / "restrict" / "best.pt"), "--words", "15", "--seed", "4"]) == 0
    assert from_onnx == capsys.readouterr().out and from_onnx.strip()
    _export(runs, "restrict", capsys, "--window", "5")
    assert main(["generate", str(runs / "restrict--window-5.onnx")]) == 2
    assert "export it with --window 1" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["restrict", "lowrank"])
def test_executorch_export_with_parity(runs, method, capsys):
    """Where ExecuTorch installs (not in the dev extra: CI skips this)."""
    pytest.importorskip("executorch.runtime")
    out = runs / f"{method}.pte"
    assert main(["export", str(runs / method / "best.pt"), "--out", str(out), "--format",
                 "executorch", "--batch-size", "4", "--window", "2", "--json"]) == 0  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert r["runtime"].startswith("ExecuTorch") and r["relative"] < 1e-4, r
    assert r["file_bytes"] == out.stat().st_size


def test_int8_is_an_onnx_route(runs, tmp_path, capsys):
    assert main(["export", str(runs / "restrict" / "best.pt"), "--out", str(tmp_path / "x.pte"),
                 "--format", "executorch", "--int8"]) == 2  # fmt: skip
    assert "--int8 quantises through ONNX Runtime" in capsys.readouterr().err
