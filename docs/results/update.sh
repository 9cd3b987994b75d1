#!/usr/bin/env bash
# Copy a campaign's small files (never checkpoints or locks; only runs that have
# finished an epoch, so have a summary.json) from the folder it trains in into
# docs/results/NAME/runs, then rebuild the report there from the
# copies, as tests/test_results.py does.
#   docs/results/update.sh NAME [CAMPAIGN_DIR]   (default ~/rrnn-runs/NAME)
set -euo pipefail
name="${1:?usage: docs/results/update.sh NAME [CAMPAIGN_DIR]}"
here="$(cd "$(dirname "$0")" && pwd)/$name"
src="${2:-$HOME/rrnn-runs/$name}"
mkdir -p "$here/runs"
# a mirror without rsync (not on every machine): drop what is gone, copy what changed
python3 - "$src" "$here/runs" <<'PY'
import fnmatch, shutil, sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
skip = lambda p: any(fnmatch.fnmatch(p.name, pat) for pat in ("*.pt", ".lock", "*.tmp*"))
# a run in its first epoch has no summary.json yet: it waits for the next update
started = lambda rel: len(rel.parts) == 1 or (src / rel.parts[0] / "summary.json").is_file()
keep = {p.relative_to(src) for p in src.rglob("*")
        if p.is_file() and not skip(p) and started(p.relative_to(src))}
for p in sorted(dst.rglob("*"), reverse=True):
    rel = p.relative_to(dst)
    if p.is_file() and rel not in keep:
        p.unlink()
    elif p.is_dir() and (not (src / rel).is_dir() or not any(p.iterdir())):
        shutil.rmtree(p)
for rel in sorted(keep):
    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / rel, dst / rel)
PY
rrnn report "$here/runs" --out "$here"
