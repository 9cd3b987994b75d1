"""The old name of :mod:`rrnn.baselines` (rrnn 0.1), kept for one release: the
same objects under the old import paths (``rrnn.compress.LowRankRNN``,
``rrnn.compress.prune.GradualPruner``, ...). Importing it warns; import
:mod:`rrnn.baselines` instead."""

import warnings

from .. import baselines as _baselines

warnings.warn(
    "rrnn.compress is now rrnn.baselines (the methods the restricted layers are compared "
    "with); the old name will be removed after rrnn 0.1: import rrnn.baselines instead",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = list(_baselines.__all__)


def __getattr__(name: str):
    # the names stay lazy, as in rrnn.baselines (the layers load torch)
    return getattr(_baselines, name)
