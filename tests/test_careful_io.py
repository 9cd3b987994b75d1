"""Ordinary conditions on the way to and from disk, as a user meets them: result
paths that are links or devices, damaged files kept aside, a full disk, no
permission, long names, a double Ctrl-C, and the sweep's checks before it starts."""

import errno
import json
import os
import stat
import subprocess

import pytest
import torch

from rrnn import fileio
from rrnn.cli import main
from rrnn.experiments import sweep as S
from rrnn.lm import train as T

from .lm_helpers import TINY, write_corpus


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "c", train_lines=150, eval_lines=20)


def _train(corpus, out, *flags):
    return main(["train", "--corpus", str(corpus), "--out", str(out), *TINY, *flags])


def _killed_after_one_epoch(corpus, out, monkeypatch):
    """A 2-epoch run stopped (as killed) right after its first epoch's checkpoint."""
    end_epoch = T._Run.end_epoch

    def stop_after_one(self, epoch):
        end_epoch(self, epoch)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(T._Run, "end_epoch", stop_after_one)
        assert _train(corpus, out, "--epochs", "2") == 130


def _one_line(err: str, *words):
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    for word in words:
        assert word in line, line
    return line


# --- paths that are not regular files ----------------------------------------------
def test_a_symlink_is_written_through_and_kept(tmp_path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    fileio.atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def _device(tmp_path, name, minor):
    """A character device of our own (null: 3, full: 7), never the system's /dev: a
    regression would replace this node, not the machine's /dev/null."""
    path = tmp_path / name
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except (PermissionError, OSError) as err:
        pytest.skip(f"cannot create a device node here ({err})")
    return path


def test_a_device_is_written_not_replaced(tmp_path):
    null = _device(tmp_path, "null", 3)
    fileio.atomic_write_text(null, "anything")
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_a_full_device_is_the_os_error_in_one_line(tmp_path):
    full = _device(tmp_path, "full", 7)
    with pytest.raises(OSError) as err:
        fileio.atomic_write_text(full, "x" * 100_000)
    assert err.value.errno == errno.ENOSPC
    assert stat.S_ISCHR(os.stat(full).st_mode)  # still the device


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        fileio.atomic_write_text(tmp_path, "x")


# --- a full disk, permissions, long names --------------------------------------------
def test_a_failed_checkpoint_write_leaves_the_last_good_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    fileio.atomic_torch_save({"epoch": 1}, path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        fileio.atomic_torch_save({"epoch": 2, "w": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB file system (needs root and mount; skipped elsewhere)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", str(where)], check=False)


def test_torch_save_on_a_full_disk_says_no_space(tiny_disk):
    path = tiny_disk / "checkpoint.pt"
    fileio.atomic_torch_save({"w": torch.zeros(10)}, path)
    with pytest.raises(OSError) as err:  # torch's own writer: "[enforce fail ...] unexpected pos"
        fileio.atomic_torch_save({"w": torch.zeros(100_000)}, path)
    assert err.value.errno == errno.ENOSPC
    assert "no space left" in fileio.explain_os_error(err.value)
    assert torch.load(path, weights_only=True)["w"].numel() == 10


def test_a_full_disk_in_train_is_one_line(tmp_path, corpus, tiny_disk, capsys):
    assert _train(corpus, tiny_disk / "run", "--epochs", "1", "--hidden-size", "64") == 1
    _one_line(capsys.readouterr().err, "no space left on the device", "--resume")


def test_no_permission_is_one_line(tmp_path, corpus, monkeypatch, capsys):
    def refuse(out, replace):
        raise PermissionError(errno.EACCES, "Permission denied", str(out))

    monkeypatch.setattr(T, "_create_out", refuse)
    assert _train(corpus, tmp_path / "run", "--epochs", "1") == 1
    _one_line(capsys.readouterr().err, "permission denied", str(tmp_path / "run"), "--out")


def test_a_too_long_name_is_one_line(tmp_path, corpus, capsys):
    assert _train(corpus, tmp_path / ("x" * 300), "--epochs", "1") == 1
    _one_line(capsys.readouterr().err, "too long")


# --- a double Ctrl-C ---------------------------------------------------------------
def test_a_second_ctrl_c_waits_for_the_checkpoint_write():
    written = []
    with T._StopFlag() as flag:
        flag._handle(2, None)  # the first: stop after this batch
        with pytest.raises(KeyboardInterrupt):
            with T._uninterrupted():
                flag._handle(2, None)  # the second, mid-write: held
                written.append("checkpoint")
        assert written == ["checkpoint"]
        with pytest.raises(KeyboardInterrupt):  # outside a write it aborts at once
            flag._handle(2, None)


# --- damaged files kept aside ----------------------------------------------------------
@pytest.mark.parametrize("content", [b"\xda{not json", b'{"format": "rrnn-sweep", "version": 0}'])
def test_a_damaged_sweep_record_is_kept_aside(tmp_path, content):
    (tmp_path / S.SWEEP_FILE).write_bytes(content)
    said = []
    S.record_grid(tmp_path, {"axes": {}}, [], log=said.append)
    assert (tmp_path / "sweep.json.corrupt").read_bytes() == content
    assert json.loads((tmp_path / S.SWEEP_FILE).read_text())["grids"][0]["axes"] == {}
    assert "sweep.json is damaged" in said[0] and "sweep.json.corrupt" in said[0]
    S.record_grid(tmp_path, {"axes": {"x": 1}}, [], log=said.append)  # a good one: appended
    assert len(json.loads((tmp_path / S.SWEEP_FILE).read_text())["grids"]) == 2
    assert len(said) == 1


def test_a_damaged_config_is_kept_aside_and_written_again_on_resume(
    tmp_path, corpus, monkeypatch, capsys
):
    out = tmp_path / "run"
    _killed_after_one_epoch(corpus, out, monkeypatch)
    good = (out / "config.json").read_text()
    (out / "config.json").write_bytes(b"\x00\x00garbage")
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert (out / "config.json.corrupt").read_bytes() == b"\x00\x00garbage"
    assert json.loads((out / "config.json").read_text()) == json.loads(good)
    assert "config.json is damaged" in capsys.readouterr().out


# --- flags that a method would ignore ----------------------------------------------------
@pytest.mark.parametrize("flags,message", [
    (["--compress", "dense", "--prune-schedule", "cubic"], "--prune-schedule is an option of --compress prune"),
    (["--compress", "prune", "--iss-no-cut"], "--iss-no-cut is an option of --compress iss"),
    (["--compress", "iss", "--lowrank", "projection"], "--lowrank is an option of --compress lowrank"),
    (["--compress-end", "0.3"], "this run is --compress restrict"),
    (["--compress", "prune", "--prune-schedule", "cubic", "--compress-ramp", "0.1"], "has none"),
    (["--compress", "iss", "--iss-no-cut", "--compress-end", "0.3"], "--iss-no-cut turns"),
])  # fmt: skip
def test_an_option_the_method_ignores_is_an_error(tmp_path, corpus, flags, message, capsys):
    assert _train(corpus, tmp_path / "run", "--epochs", "1", *flags) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# --- the sweep checks before it starts ----------------------------------------------------
def test_a_sweep_with_an_unknown_dataset_starts_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--datasets", "foo", *TINY, "--epochs", "1"]) == 2
    assert "unknown dataset 'foo'" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_sweep_with_an_incomplete_corpus_starts_nothing(tmp_path, corpus, capsys):
    (corpus / "test.txt").unlink()
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--corpus", str(corpus), *TINY]) == 2
    assert "missing test.txt" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_run_locked_by_an_orphaned_worker_names_its_pid(tmp_path, corpus):
    runs = S.expand({"corpus": str(corpus), "epochs": 1}, {})
    (run,) = runs
    held = S._lock(tmp_path / run.name)  # as a worker whose sweep was killed holds it
    held.write(f"{os.getpid()}\n")
    held.flush()
    said = []
    results = S.Sweep(tmp_path, runs, jobs=1, log=said.append).run_local()
    assert results == {run.name: "busy"}
    assert f"worker pid {os.getpid()}" in run.detail and f"kill -INT {os.getpid()}" in run.detail
    held.close()


def test_an_unreachable_ray_address_fails_fast():
    with pytest.raises(S.SweepError, match="no Ray cluster answered within 1 s"):
        S._reachable("127.0.0.1:9", timeout=1)
    with pytest.raises(S.SweepError, match="expected HOST:PORT"):
        S._reachable("nowhere")


# --- hints that lead somewhere ------------------------------------------------------------
def test_a_run_without_a_checkpoint_gets_one_way_forward(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # stopped before its first checkpoint
    assert _train(corpus, out, "--epochs", "1") == 2
    first = _one_line(capsys.readouterr().err, "before its first checkpoint", "--overwrite")
    assert "--resume" not in first
    assert main(["train", "--out", str(out), "--resume"]) == 2
    _one_line(capsys.readouterr().err, "nothing to continue", "--overwrite instead of --resume")
    assert _train(corpus, out, "--epochs", "1", "--overwrite") == 0


def test_resume_after_the_corpus_moved_says_where_it_was(tmp_path, corpus, monkeypatch, capsys):
    out = tmp_path / "run"
    _killed_after_one_epoch(corpus, out, monkeypatch)
    corpus.rename(tmp_path / "moved")
    assert main(["train", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"trained on the corpus in {corpus}; pass --corpus DIR with --resume" in err
    assert main(["train", "--out", str(out), "--resume", "--corpus", str(tmp_path / "moved")]) == 0


# --- budgets: pruning's schedule in real iterations ---------------------------------------
def test_a_pruning_window_shorter_than_its_frequency_is_refused(tmp_path, corpus, capsys):
    flags = ["--epochs", "2", "--compress", "prune", "--target-params", "200"]
    assert _train(corpus, tmp_path / "run", *flags) == 2
    line = _one_line(capsys.readouterr().err, "fewer than --prune-freq 100", "--prune-freq 1 or less")
    assert "of 66 (33 per epoch)" in line  # counted from the corpus, not assumed
    assert not (tmp_path / "run").exists()
    assert _train(corpus, tmp_path / "run", *flags, "--prune-freq", "1") == 0
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--corpus", str(corpus), *TINY, *flags[:2],
                 "--compresses", "prune", "--target-params", "200"]) == 2  # fmt: skip
    assert "fewer than --prune-freq 100" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_dry_run_of_pruning_updates_its_masks_every_window(tmp_path, corpus, capsys):
    assert main(["train", "--corpus", str(corpus), *TINY, "--dry-run", "--compress", "prune",
                 "--target-params", "200"]) == 0  # fmt: skip
