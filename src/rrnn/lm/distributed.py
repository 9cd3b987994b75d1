"""Data-parallel training under ``torchrun``: each rank trains on its share of
the batch columns, gradients are averaged by DistributedDataParallel, and rank 0
alone writes the run directory.

::

    global batch (N/B, B):  | rank 0: columns 0..B/W-1 | rank 1: B/W..2B/W-1 | ...
    each rank: loss = mean over its (T, B/W) tokens; DDP averages the gradients,
    which is the gradient of the mean over all (T, B) tokens.

Outside ``torchrun`` (no ``WORLD_SIZE`` > 1) everything here is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Group:
    """This process's place in a data-parallel run (rank 0 of 1 when alone)."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.owned = False
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
            dist.init_process_group(backend)
            self.owned = True
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> torch.device:
        """cuda -> cuda:LOCAL_RANK under torchrun; otherwise as given."""
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return dev

    def columns(self, batch_size: int) -> slice:
        """This rank's batch columns; the batch must divide evenly."""
        if batch_size % self.world:
            raise ValueError(
                f"--batch-size {batch_size} must be divisible by the number of processes "
                f"({self.world}): each trains on an equal share of the batch columns"
            )
        share = batch_size // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        dev = next(model.parameters()).device
        ids = [dev.index] if dev.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def mean_and_any(self, value: float, flag: bool) -> tuple[float, bool]:
        """The mean of ``value`` over ranks, and whether any rank raised ``flag``
        (one all-reduce; every rank then decides the same)."""
        if self.world == 1:
            return value, flag
        t = torch.tensor([value, float(flag)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t[0].item() / self.world, t[1].item() > 0

    def gather_columns(self, t: torch.Tensor) -> torch.Tensor:
        """(L, B/W, H) on each rank -> (L, B, H), columns in rank order."""
        if self.world == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=1)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
