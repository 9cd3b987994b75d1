"""The old path of :mod:`rrnn.baselines.prune` (see :mod:`rrnn.compress`)."""

from ..baselines.prune import *  # noqa: F403
