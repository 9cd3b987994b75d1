"""Dispatch measured on the machine: the cache file, its validation, the pins."""

import json

import pytest
import torch

from rrnn import RestrictedGRU, RestrictedLSTM
from rrnn.kernels import tuning

pytestmark = pytest.mark.tuning


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RRNN_DISPATCH", raising=False)
    monkeypatch.delenv("RRNN_KERNEL", raising=False)
    tuning.forget()
    yield
    tuning.forget()


def _cache_file():
    key, _ = tuning.machine_key()
    return tuning.cache_path(key)


def test_first_call_measures_and_caches_the_faster_path():
    m = RestrictedLSTM(12, 16, 2, sharing_rate=0.5)
    x = torch.randn(10, 4, 12)
    choice = m.path_for(x)
    assert choice in ("shared-row", "reference")
    assert "measured on this machine" in choice.reason
    data = json.loads(_cache_file().read_text())
    assert data["format"] == tuning.FORMAT and data["machine"] == tuning.machine_key()[1]
    (record,) = data["choices"].values()
    faster = "shared-row" if record["shared_row_s"] * tuning.MIN_GAIN < record["reference_s"] else "reference"
    assert record["path"] == choice == faster
    # a second module of the same class reads the table: no new measurement
    tuning.forget()
    before = _cache_file().stat().st_mtime_ns
    assert RestrictedLSTM(12, 16, 2, sharing_rate=0.5).path_for(torch.randn(10, 3, 12)) == choice
    assert _cache_file().stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "rounds, expected, calls",
    [
        # a clear win is decided on the first rounds
        ([{"reference": [1.0] * 3, "shared-row": [0.5] * 3}], "shared-row", 1),
        # a near tie is timed again, and all the rounds decide
        ([{"reference": [1.0] * 3, "shared-row": [0.98] * 3},
          {"reference": [1.0] * 5, "shared-row": [1.04] * 5}], "reference", 2),
        # a tie that stays a tie keeps torch's kernel
        ([{"reference": [1.0] * 3, "shared-row": [0.99] * 3},
          {"reference": [1.0] * 5, "shared-row": [0.99] * 5}], "reference", 2),
        ([{"reference": [1.0] * 3, "shared-row": [1.03] * 3},
          {"reference": [1.0] * 5, "shared-row": [0.97] * 5}], "shared-row", 2),
    ],
)
def test_a_near_tie_is_timed_again_before_it_is_decided(monkeypatch, rounds, expected, calls):
    seen = []

    def fake(fns, repeats, warmup, budget_s=None, **kw):
        assert set(fns) == {"reference", "shared-row"}
        seen.append(budget_s)
        return {k: list(v) for k, v in rounds[len(seen) - 1].items()}

    monkeypatch.setattr(tuning, "interleaved", fake)
    m = RestrictedLSTM(12, 16, 2, sharing_rate=0.5)
    assert m.path_for(torch.randn(10, 4, 12)) == expected
    assert len(seen) == calls
    if calls == 2:
        assert seen[1] == tuning.TIE_BUDGET_S


def test_measuring_leaves_the_rng_and_grads_alone():
    m = RestrictedGRU(8, 8, 2, sharing_rate=0.5, dropout=0.3)
    x = torch.randn(6, 2, 8, requires_grad=True)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    m.path_for(x)  # measures forward and backward (training mode, dropout)
    assert torch.equal(torch.rand(3), expected)
    assert all(p.grad is None for p in m.parameters()) and x.grad is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"format": 999, "machine": {}, "choices": {}}),
        "[]",
    ],
)
def test_a_corrupt_or_foreign_cache_is_ignored_and_rebuilt(content):
    path = _cache_file()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    m = RestrictedLSTM(12, 16, 2, sharing_rate=0.5)
    assert "measured on this machine" in m.path_for(torch.randn(10, 4, 12)).reason
    data = json.loads(path.read_text())
    assert data["format"] == tuning.FORMAT and len(data["choices"]) == 1


def test_a_cache_from_another_machine_is_never_trusted():
    m = RestrictedLSTM(12, 16, 2, sharing_rate=0.5)
    x = torch.randn(10, 4, 12)
    cls = tuning.class_key(m, x, 10, torch.is_grad_enabled())
    path = _cache_file()
    path.parent.mkdir(parents=True)
    other = dict(tuning.machine_key()[1], cpu="Some Other CPU")
    forged = {"class": cls, "path": "shared-row", "shared_row_s": 1e-9, "reference_s": 1.0}
    path.write_text(json.dumps({"format": tuning.FORMAT, "machine": other, "choices": {cls: forged}}))
    choice = m.path_for(x)
    record = json.loads(path.read_text())["choices"][cls]
    assert record["shared_row_s"] != 1e-9  # measured here, not read
    assert choice == record["path"]


def test_a_valid_cache_is_used():
    m = RestrictedLSTM(12, 16, 2, sharing_rate=0.5)
    x = torch.randn(10, 4, 12)
    cls = tuning.class_key(m, x, 10, True)
    path = _cache_file()
    path.parent.mkdir(parents=True)
    rec = {"class": cls, "path": "reference", "shared_row_s": 2.0, "reference_s": 1.0}
    path.write_text(
        json.dumps({"format": tuning.FORMAT, "machine": tuning.machine_key()[1], "choices": {cls: rec}})
    )
    choice = m.path_for(x)
    assert choice == "reference" and "0.50x" in choice.reason


def test_pins(monkeypatch):
    m = RestrictedLSTM(12, 16, 2, sharing_rate=0.5)
    x = torch.randn(10, 4, 12)
    monkeypatch.setenv("RRNN_KERNEL", "reference")
    assert m.path_for(x) == "reference" and "RRNN_KERNEL" in m.path_for(x).reason
    monkeypatch.setenv("RRNN_KERNEL", "shared-row")
    assert m.path_for(x) == "shared-row"
    m.kernel = "reference"  # the module's own pin wins
    assert m.path_for(x) == "reference"
    monkeypatch.setenv("RRNN_KERNEL", "fastest")
    m.kernel = "auto"
    with pytest.raises(ValueError, match="RRNN_KERNEL='fastest' is not a path"):
        m(x)
    monkeypatch.setenv("RRNN_DISPATCH", "static")
    monkeypatch.delenv("RRNN_KERNEL")
    assert "fixed threshold" in m.path_for(x).reason
    assert not _cache_file().exists()


def test_outputs_do_not_depend_on_the_choice():
    m = RestrictedLSTM(12, 16, 2, sharing_rate=0.5).double()
    x = torch.randn(10, 4, 12, dtype=torch.float64)
    out_auto, _ = m(x)
    m.kernel = "reference"
    out_ref, _ = m(x)
    torch.testing.assert_close(out_auto, out_ref)


def test_a_resumed_run_takes_the_paths_its_checkpoint_recorded(tmp_path):
    from rrnn.lm import train as T

    from .lm_helpers import small_config, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    cfg = small_config(corpus, epochs=1)
    T.train(cfg, tmp_path / "run", log=lambda m: None, progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    recorded = ckpt["dispatch"]
    assert recorded and all(r["path"] in ("shared-row", "reference") for r in recorded.values())
    # another process would measure afresh; a forged opposite cache file must lose
    # against the checkpoint's record
    tuning.forget()
    path = _cache_file()
    data = json.loads(path.read_text())
    for r in data["choices"].values():
        r["path"] = "reference" if r["path"] == "shared-row" else "shared-row"
    path.write_text(json.dumps(data))
    tuning.preload(recorded)
    assert tuning.snapshot() == recorded


def test_bench_retune_forgets_this_machines_choices(capsys):
    from rrnn.cli import main

    m = RestrictedLSTM(12, 16, 2, sharing_rate=0.5)
    m.path_for(torch.randn(10, 4, 12))
    assert _cache_file().exists()
    code = main(["bench", "--retune", "--cells", "rnn", "--rates", "0.5", "--sizes", "stream",
                 "--repeats", "5", "--stream-repeats", "5", "--stream-block", "1"])  # fmt: skip
    assert code == 0
    assert "forgot the measured dispatch" in capsys.readouterr().out
    assert not _cache_file().exists()  # an RNN grid measures nothing new


def test_another_kernel_build_measures_afresh(monkeypatch):
    """The machine key holds the kernels' identity (sources and build): a changed
    kernel must not inherit choices measured on the old one."""
    from rrnn.kernels import native

    key, info = tuning.machine_key()
    assert info["kernels"] == native.identity()
    tuning._machine_key.cache_clear()
    monkeypatch.setattr(native, "identity", lambda: "another-build")
    try:
        other, other_info = tuning.machine_key()
        assert other != key and other_info["kernels"] == "another-build"
    finally:
        tuning._machine_key.cache_clear()
