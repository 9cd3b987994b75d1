"""One run of a sweep, in its own process::

    python -m rrnn.experiments.worker RUN_DIR CONFIG_JSON

Starts the run, or resumes it from ``RUN_DIR/checkpoint.pt``. Exit codes are
those of ``rrnn train``: 0 finished, 3 diverged, 130 stopped by SIGINT with a
checkpoint written, 2 bad settings.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..lm.train import TrainConfig, TrainingDiverged, train


def main(argv: list[str]) -> int:
    run_dir, config = Path(argv[0]), json.loads(argv[1])
    cfg = TrainConfig.from_dict(config)
    resume = (run_dir / "checkpoint.pt").is_file()

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)

    log(f"{'resuming' if resume else 'starting'} {run_dir.name}")
    try:
        # every setting counts as given, so that resuming a run stored with others fails
        result = train(
            cfg,
            run_dir,
            resume=resume,
            overwrite=not resume,
            explicit=set(config),
            log=log,
            progress=False,
        )
    except TrainingDiverged as err:
        log(str(err))
        return 3
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        log(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        log("aborted without saving")
        return 130
    if result["status"] == "interrupted":
        return 130
    how = (
        f"stopped by patience after epoch {result['stopped_epoch']}"
        if result["status"] == "early-stopped"
        else "finished"
    )
    log(f"{how}: test ppl {result['test_ppl']:.2f} at epoch {result['best_epoch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
