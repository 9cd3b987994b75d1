"""The old path of :mod:`rrnn.baselines.sizes` (see :mod:`rrnn.compress`)."""

from ..baselines.sizes import *  # noqa: F403
