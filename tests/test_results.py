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


def _measured_numbers(runs: Path) -> set[str]:
    """Every perplexity the committed runs hold, to two decimals: each epoch's valid and
    test, and the mean over seeds of each setting's best-validation pair."""
    from rrnn.experiments.report import load_sweep

    found, by_setting = set(), {}
    for run in load_sweep(runs):
        for h in run.history:
            found |= {f"{h[k]:.2f}" for k in ("valid_ppl", "test_ppl") if h.get(k) is not None}
        test, valid, _ = run.selected("best-valid")
        if test is not None:
            by_setting.setdefault(re.sub(r"-seed\d+", "", run.name), []).append((test, valid))
    for pairs in by_setting.values():
        found |= {f"{sum(p[i] for p in pairs) / len(pairs):.2f}" for i in (0, 1)}
    return found


def test_the_readmes_campaign_numbers_are_the_committed_runs():
    """The README's section on the paper's schedule quotes perplexities by hand; each one
    with two decimals must be a number of a committed run (a rerun that replaces a
    record, or a record that grows, makes a stale quote fail here)."""
    readme = (RESULTS.parents[1] / "README.md").read_text()
    start = readme.index("### At the paper's schedule")
    section = readme[start : readme.index("\n### ", start + 1)]
    quoted = set(re.findall(r"(?<![\d.])\d{2,3}\.\d{2}(?![\d%])", section))
    assert len(quoted) > 10  # the section still quotes the campaign
    missing = quoted - _measured_numbers(RESULTS / "ptb-paper-schedule" / "runs")
    assert not missing, f"README quotes perplexities that no committed run holds: {missing}"
