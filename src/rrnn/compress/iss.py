"""The old path of :mod:`rrnn.baselines.iss` (see :mod:`rrnn.compress`)."""

from ..baselines.iss import *  # noqa: F403
