"""Carry a campaign's small files between the folder it trains in and the repository.

    python docs/results/sync.py update  CAMPAIGN_DIR RUNS_DIR   # campaign -> docs/results/NAME/runs
    python docs/results/sync.py restore RUNS_DIR CAMPAIGN_DIR   # the committed runs -> a fresh campaign

The campaign folder (``~/rrnn-runs/NAME``) may not survive between sessions, and a run
whose checkpoint is lost starts again from epoch 0. So ``update`` never loses what
the repository holds:

- a run the campaign folder does not have is left as committed;
- a run the campaign has trained fewer epochs than the committed copy (restarted
  without its checkpoint) is left as committed, and said so;
- ``sweep.json`` keeps every grid either side asked for.

Only small files travel (never checkpoints, locks or half-written temporaries), and
only runs that have finished an epoch (so have a ``summary.json``).

``restore`` copies into a campaign folder the committed runs it does not have (a
run folder it has, even one in its first epoch, is left alone) and adds the
committed grids to its ``sweep.json``, so that a sweep started there afterwards
skips the finished runs.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import sys
from pathlib import Path

SKIP = ("*.pt", ".lock", "*.tmp*")
SWEEP = "sweep.json"


def _small(path: Path) -> bool:
    return path.is_file() and not any(fnmatch.fnmatch(path.name, p) for p in SKIP)


def _epochs(run: Path) -> int:
    try:
        return int(json.loads((run / "summary.json").read_text()).get("epochs") or 0)
    except (OSError, ValueError):
        return -1


def _merge_sweep(src: Path, dst: Path) -> None:
    """Write into ``dst`` the grids of both files, ``dst``'s first, each once."""
    if not src.is_file():
        return
    new = json.loads(src.read_text())
    if dst.is_file():
        old = json.loads(dst.read_text())
        new = {**old, "grids": old["grids"] + [g for g in new["grids"] if g not in old["grids"]]}
    tmp = dst.with_suffix(".json.part")
    tmp.write_text(json.dumps(new, indent=2) + "\n")
    tmp.replace(dst)


def _mirror_run(src: Path, dst: Path) -> None:
    keep = {p.relative_to(src) for p in src.rglob("*") if _small(p)}
    if dst.is_dir():
        for p in sorted(dst.rglob("*"), reverse=True):
            if p.is_file() and p.relative_to(dst) not in keep:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    for rel in sorted(keep):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)


def update(campaign: Path, runs: Path, log=print) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    _merge_sweep(campaign / SWEEP, runs / SWEEP)
    for src in sorted(p for p in campaign.iterdir() if p.is_dir()):
        if not (src / "summary.json").is_file():
            continue  # in its first epoch: the next update takes it
        dst = runs / src.name
        have, got = _epochs(dst), _epochs(src)
        if dst.is_dir() and have > got:
            log(f"kept {src.name}: the committed copy has {have} epochs, "
                f"the campaign's {got} (restarted from epoch 0, or not as far along)")
            continue
        _mirror_run(src, dst)


def restore(runs: Path, campaign: Path, log=print) -> None:
    campaign.mkdir(parents=True, exist_ok=True)
    _merge_sweep(runs / SWEEP, campaign / SWEEP)
    copied = []
    for src in sorted(p for p in runs.iterdir() if p.is_dir()):
        if not (campaign / src.name).exists():  # a run the campaign has, even half-written, is its own
            _mirror_run(src, campaign / src.name)
            copied.append(src.name)
    log(f"restored {len(copied)} runs from {runs} into {campaign}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("update", "restore"):
        sys.exit(__doc__)
    {"update": update, "restore": restore}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
