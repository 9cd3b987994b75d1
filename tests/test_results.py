"""Every committed report rebuilds from its committed runs, or says why it cannot."""

import json
import re
from pathlib import Path

import pytest

from rrnn.experiments.report import write_report

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
REPORTS = sorted(p.parent for p in RESULTS.glob("**/report.md"))
LOST = "raw runs are not in the repository"


def _runs_for(folder: Path) -> Path | None:
    """The runs a report was built from: its own runs/, or its parent's (a report
    with another rule in a sub-folder)."""
    for candidate in (folder / "runs", folder.parent / "runs"):
        if candidate.is_dir():
            return candidate
    return None


def _readme_for(folder: Path) -> Path:
    return next(p / "README.md" for p in (folder, folder.parent) if (p / "README.md").is_file())


@pytest.mark.parametrize("folder", REPORTS, ids=[str(p.relative_to(RESULTS)) for p in REPORTS])
def test_a_committed_report_rebuilds_from_its_committed_runs(folder, tmp_path):
    runs = _runs_for(folder)
    if runs is None:
        text = _readme_for(folder).read_text()
        assert LOST in text, f"{folder} has a report but no runs/, and its README does not say so"
        pytest.skip(f"{folder.name}: its raw runs were lost before they could be committed")
    committed = (folder / "report.md").read_text()
    rule = re.search(r"\*\*Selection rule \(([\w-]+)\)\*\*", committed).group(1)
    # runs/ is copied to a folder of the same name, so that the title matches
    write_report(runs, out=tmp_path, rule=rule, log=lambda m: None)
    assert (tmp_path / "report.md").read_text() == committed
    assert (tmp_path / "report.csv").read_text() == (folder / "report.csv").read_text()
    for png in folder.glob("*.png"):
        assert (tmp_path / png.name).is_file(), f"{png.name} is not made by the report any more"


def test_committed_runs_hold_no_checkpoints_and_every_small_file():
    for runs in RESULTS.glob("*/runs"):
        assert not list(runs.glob("**/*.pt")), f"checkpoints committed in {runs}"
        for run in (p for p in runs.iterdir() if p.is_dir()):
            for name in ("config.json", "summary.json", "train.log"):
                assert (run / name).is_file(), f"{run.name} lacks {name}"
            summary = json.loads((run / "summary.json").read_text())
            # a run that diverged before its first log interval wrote no metrics line
            early = summary["status"] == "diverged" and summary["epochs"] == 0
            assert early or (run / "metrics.jsonl").is_file(), f"{run.name} lacks metrics.jsonl"
