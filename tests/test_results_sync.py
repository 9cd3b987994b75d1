"""docs/results/sync.py never loses a committed run: not to a fresh campaign folder,
nor to a run restarted without its checkpoint."""

import importlib.util
import json
from pathlib import Path

SYNC = Path(__file__).resolve().parents[1] / "docs" / "results" / "sync.py"
spec = importlib.util.spec_from_file_location("results_sync", SYNC)
sync = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sync)


def _run(root: Path, name: str, epochs: int, status: str = "running", checkpoint=True) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"status": status, "epochs": epochs}))
    (run / "metrics.jsonl").write_text("{}\n" * epochs)
    (run / "train.log").write_text(f"{epochs} epochs\n")
    if checkpoint:
        (run / "checkpoint.pt").write_bytes(b"weights")
    return run


def _sweep(root: Path, *grids: str) -> None:
    (root / "sweep.json").write_text(json.dumps({"format": "rrnn-sweep", "grids": list(grids)}))


def _grids(root: Path) -> list:
    return json.loads((root / "sweep.json").read_text())["grids"]


def test_update_copies_small_files_and_keeps_runs_the_campaign_lacks(tmp_path):
    campaign, runs = tmp_path / "campaign", tmp_path / "runs"
    _run(runs, "finished-earlier", 30, "early-stopped", checkpoint=False)
    _run(campaign, "a", 3)
    (campaign / "a" / ".lock").write_text("pid")
    (campaign / "starting").mkdir()  # no summary.json yet: in its first epoch
    _sweep(runs, "old")
    _sweep(campaign, "new", "old")
    sync.update(campaign, runs, log=lambda m: None)
    assert (runs / "finished-earlier" / "summary.json").is_file()
    assert sorted(p.name for p in (runs / "a").iterdir()) == ["metrics.jsonl", "summary.json", "train.log"]
    assert not (runs / "starting").exists()
    assert _grids(runs) == ["old", "new"]


def test_update_keeps_a_longer_committed_run_over_a_restarted_one(tmp_path):
    campaign, runs = tmp_path / "campaign", tmp_path / "runs"
    _run(runs, "a", 49, checkpoint=False)
    _run(campaign, "a", 2)
    said = []
    sync.update(campaign, runs, log=said.append)
    assert json.loads((runs / "a" / "summary.json").read_text())["epochs"] == 49
    assert "49 epochs" in said[0] and "2" in said[0]
    _run(campaign / "again", "a", 50)  # once the restarted run has gone further, it wins
    sync.update(campaign / "again", runs, log=said.append)
    assert json.loads((runs / "a" / "summary.json").read_text())["epochs"] == 50


def test_update_drops_files_a_run_no_longer_has(tmp_path):
    campaign, runs = tmp_path / "campaign", tmp_path / "runs"
    _run(runs, "a", 1, checkpoint=False)
    (runs / "a" / "stale.json").write_text("{}")
    _run(campaign, "a", 2)
    sync.update(campaign, runs, log=lambda m: None)
    assert not (runs / "a" / "stale.json").exists()


def test_restore_adds_missing_runs_and_never_touches_the_campaigns_own(tmp_path):
    campaign, runs = tmp_path / "campaign", tmp_path / "runs"
    _run(runs, "done", 20, "early-stopped", checkpoint=False)
    _run(runs, "live", 10, checkpoint=False)
    (campaign / "live").mkdir(parents=True)  # restarted, first epoch: no summary yet
    _sweep(runs, "old")
    _sweep(campaign, "new")
    sync.restore(runs, campaign, log=lambda m: None)
    assert json.loads((campaign / "done" / "summary.json").read_text())["status"] == "early-stopped"
    assert not any((campaign / "live").iterdir())
    assert _grids(campaign) == ["new", "old"]
