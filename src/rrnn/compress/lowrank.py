"""The old path of :mod:`rrnn.baselines.lowrank` (see :mod:`rrnn.compress`)."""

from ..baselines.lowrank import *  # noqa: F403
