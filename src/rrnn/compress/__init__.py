"""The compression methods the restricted RNN is compared with, usable on any
model with torch.nn recurrent layers:

- :mod:`~rrnn.compress.lowrank`: low-rank factors and shared projections (Lu et al. 2016);
- :mod:`~rrnn.compress.prune`: gradual magnitude pruning (Narang et al. 2017; cubic schedule);
- :mod:`~rrnn.compress.iss`: intrinsic sparse structures with group Lasso (Wen et al. 2018);
- :mod:`~rrnn.compress.sizes`: parameter counts and the sizes that meet a budget
  (a smaller dense model, a rank, a sparsity).
"""

from .iss import ISSRegularizer, StackedRNN, compact, group_entries, group_norms_sq
from .lowrank import LowRankRNN, ProjectedRNN, projected
from .prune import GradualPruner, cubic_sparsity, narang_threshold, sparse_weights, stored_count
from .sizes import (
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

METHODS = ("restrict", "lowrank", "prune", "iss", "dense")

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
