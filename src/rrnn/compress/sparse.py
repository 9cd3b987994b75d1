"""The old path of :mod:`rrnn.baselines.sparse` (see :mod:`rrnn.compress`)."""

from ..baselines.sparse import *  # noqa: F403
