"""The compression methods the restricted RNN is compared with, usable on any
model with torch.nn recurrent layers:

- :mod:`~rrnn.baselines.lowrank`: low-rank factors and shared projections (Lu et al. 2016);
- :mod:`~rrnn.baselines.prune`: gradual magnitude pruning (Narang et al. 2017; cubic schedule);
- :mod:`~rrnn.baselines.iss`: intrinsic sparse structures with group Lasso (Wen et al. 2018);
- :mod:`~rrnn.baselines.sizes`: parameter counts and the sizes that meet a budget
  (a smaller dense model, a rank, a sparsity).
"""

from typing import TYPE_CHECKING

from .sizes import (
    METHODS,
    check_rank,
    check_target,
    dense_count,
    dense_hidden_for,
    lowrank_count,
    projection_count,
    rank_for,
    sparsity_for,
    stacked_count,
)

if TYPE_CHECKING:
    from .iss import ISSRegularizer, StackedRNN, compact, group_entries, group_norms_sq
    from .lowrank import LowRankRNN, ProjectedRNN, projected
    from .prune import GradualPruner, cubic_sparsity, narang_threshold, sparse_weights, stored_count

# loaded on first use (they need torch; sizes does not, and rrnn.lm.config reads it)
_LAZY = {
    "iss": ("ISSRegularizer", "StackedRNN", "compact", "group_entries", "group_norms_sq"),
    "lowrank": ("LowRankRNN", "ProjectedRNN", "projected"),
    "prune": ("GradualPruner", "cubic_sparsity", "narang_threshold", "sparse_weights", "stored_count"),
}


__all__ = [
    "METHODS",
    "check_rank",
    "check_target",
    "GradualPruner",
    "ISSRegularizer",
    "LowRankRNN",
    "ProjectedRNN",
    "StackedRNN",
    "compact",
    "cubic_sparsity",
    "dense_count",
    "dense_hidden_for",
    "group_entries",
    "group_norms_sq",
    "lowrank_count",
    "narang_threshold",
    "projected",
    "projection_count",
    "rank_for",
    "sparse_weights",
    "sparsity_for",
    "stacked_count",
    "stored_count",
]


def __getattr__(name: str):
    # absolute imports: ``from . import iss`` would ask this hook for "iss" and recurse
    if name in _LAZY["iss"]:
        import rrnn.baselines.iss as found
    elif name in _LAZY["lowrank"]:
        import rrnn.baselines.lowrank as found
    elif name in _LAZY["prune"]:
        import rrnn.baselines.prune as found
    else:
        raise AttributeError(f"module 'rrnn.baselines' has no attribute {name!r}")
    return getattr(found, name)
