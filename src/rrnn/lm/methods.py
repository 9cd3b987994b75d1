"""What each compression method adds to the language model's training loop.

``rrnn train --compress METHOD``:

============  =====================================================================
restrict      the restricted layer at ``--sharing-rate`` (nothing added to the loop)
dense         a classical layer with the hidden size that meets the budget
lowrank       factored matrices (``--lowrank factors``) or a shared projection
              (``--lowrank projection``), ``--rank`` or the rank that meets the budget
prune         a classical layer pruned during training (:class:`~rrnn.baselines.GradualPruner`)
iss           a classical layer with the ISS group Lasso; compacted when loaded
============  =====================================================================

The budget (``--target-params``) defaults to the recurrent parameter count of the
restricted model at ``--sharing-rate``, so ``--compress dense --sharing-rate 0.5``
is "a classical model as small as the restricted one at r = 0.5". ISS meets it by
cutting the weakest units at ``--compress-end`` (see
:meth:`~rrnn.baselines.ISSRegularizer.cut`); ``--iss-no-cut`` leaves the widths to
the group Lasso alone, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from ..baselines import GradualPruner, ISSRegularizer, compact, stored_count
from .model import ModelConfig, RNNModel


class Schedule:
    """Iterations (global optimizer steps, from 0) where a method starts, ramps and ends."""

    def __init__(self, cfg, windows: int) -> None:
        total = cfg.epochs * windows
        self.total = total
        self.end = max(1, min(total, round(cfg.compress_end * total)))
        self.start = min(round(cfg.compress_start * windows), self.end - 1)
        self.ramp = min(max(self.start, round(cfg.compress_ramp * total)), self.end)
        self.adjusted = self.start != round(cfg.compress_start * windows)


class Method:
    """The restricted, dense and low-rank models: nothing happens in the loop."""

    name = "restrict"

    def __init__(self, cfg, model: RNNModel, schedule: Schedule) -> None:
        self.cfg, self.model, self.schedule = cfg, model, schedule

    def penalty(self):
        return None

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def at_final_size(self) -> bool:
        """Whether the model now has the size it ends with. Only such epochs can be
        a run's best (its reported numbers and best.pt) and count for --patience:
        an epoch before pruning ends is a larger model than the budget."""
        return True

    def describe(self) -> str:
        c = self.model.config
        if c.compress == "lowrank":
            return f"lowrank {c.lowrank}, rank {c.rank}"
        if c.compress == "dense":
            return f"dense, hidden size {c.hidden_size}"
        return f"restricted, r={c.sharing_rate}"

    def counts(self) -> dict:
        n = self.model.rnn_parameters()
        return {
            "rnn_params_dense": n,
            "rnn_params_nonzero": _nonzero(self.model.rnn),
            "rnn_params": n,
        }


class Prune(Method):
    name = "prune"

    def __init__(self, cfg, model, schedule) -> None:
        super().__init__(cfg, model, schedule)
        s = schedule
        self.sparsity = cfg.resolved_sparsity()
        self.pruner = GradualPruner(
            model.rnn, self.sparsity, start=s.start, end=s.end, ramp=s.ramp,
            freq=cfg.prune_freq, schedule=cfg.prune_schedule,
        )  # fmt: skip

    def after_step(self) -> None:
        self.pruner.step()

    def at_final_size(self) -> bool:
        # the step at `end` sets the last masks; at the run's last step the size is final anyway
        return self.pruner.itr > self.schedule.end or self.pruner.itr >= self.schedule.total

    def state_dict(self) -> dict:
        return self.pruner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.pruner.load_state_dict(state)

    def describe(self) -> str:
        s = self.schedule
        return (f"prune ({self.cfg.prune_schedule}) to sparsity {self.sparsity:.4f} from "
                f"iteration {s.start} (ramp {s.ramp}) to {s.end} of {s.total}, every "
                f"{self.cfg.prune_freq}")  # fmt: skip

    def counts(self) -> dict:
        dense = self.model.rnn_parameters()
        nonzero = _nonzero(self.model.rnn)
        values, indices = stored_count(self.model.rnn)
        biases = sum(p.numel() for n, p in self.model.rnn.named_parameters() if "bias" in n)
        return {"rnn_params_dense": dense, "rnn_params_nonzero": nonzero,
                "rnn_params": values + biases, "rnn_sparse_index_entries": indices,
                "density": self.pruner.density()}  # fmt: skip


class ISS(Method):
    name = "iss"

    def __init__(self, cfg, model, schedule) -> None:
        super().__init__(cfg, model, schedule)
        self.reg = ISSRegularizer(
            model.rnn, model.decoder.weight, cfg.iss_lambda, cfg.iss_threshold
        )
        self.itr = 0

    def penalty(self):
        return self.reg.penalty()

    def after_step(self) -> None:
        if self.cfg.iss_cut and self.itr == self.schedule.end and self.reg.active:
            self.reg.cut(self.cfg.budget())
        self.reg.step()
        self.itr += 1

    def at_final_size(self) -> bool:
        # with the cut: once it has happened; lambda alone shrinks the widths all along
        return not self.cfg.iss_cut or not self.reg.active or self.itr >= self.schedule.total

    def state_dict(self) -> dict:
        return {"itr": self.itr, **self.reg.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.itr = int(state["itr"])
        self.reg.load_state_dict(state)

    def describe(self) -> str:
        cut = (f"; cut to {self.cfg.budget():,} recurrent parameters at iteration "
               f"{self.schedule.end} of {self.schedule.total}"
               if self.cfg.iss_cut else "; no cut (lambda alone)")  # fmt: skip
        return f"iss, lambda {self.cfg.iss_lambda:g}, threshold {self.cfg.iss_threshold:g}{cut}"

    def counts(self) -> dict:
        widths = self.reg.widths()
        small = compact_model(self.model)
        return {"rnn_params_dense": self.model.rnn_parameters(),
                "rnn_params_nonzero": _nonzero(self.model.rnn),
                "rnn_params": small.rnn_parameters(), "widths": widths}  # fmt: skip


METHODS = {"restrict": Method, "dense": Method, "lowrank": Method, "prune": Prune, "iss": ISS}


def build(cfg, model: RNNModel, windows: int) -> Method:
    return METHODS[cfg.compress](cfg, model, Schedule(cfg, windows))


def _nonzero(module: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in module.parameters())


@torch.no_grad()
def compact_model(model: RNNModel) -> RNNModel:
    """An ISS-trained model with its all-zero units removed: a real, smaller model
    (layers of different widths) with the same outputs from a zero state."""
    c = model.config
    if c.compress != "iss" or c.widths is not None:
        return model
    if c.tie_weights:
        raise ValueError("ISS with tied weights is not supported (the decoder's columns are "
                         "the embedding's); use variant 'plain'")  # fmt: skip
    stack, reader, kept = compact(model.rnn, model.decoder.weight)
    config = ModelConfig.from_dict(dict(c.to_dict(), widths=[k.numel() for k in kept]))
    small = RNNModel(config).to(device=reader.device, dtype=reader.dtype)
    small.encoder.weight.copy_(model.encoder.weight)
    small.rnn.load_state_dict(stack.state_dict())
    small.decoder.weight.copy_(reader)
    small.decoder.bias.copy_(model.decoder.bias)
    return small.train(model.training)
