"""Training as several workers (torchrun): the process group, each worker's share of
a batch, and what the workers add up or gather.

Every worker holds the same data and draws the same shuffle; each trains on its
slice of every global batch (``--batch-size`` stays the global batch), and
DistributedDataParallel averages the gradients. Evaluation is sharded the
same way and its outputs gathered, so every worker scores the whole split.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist

from ..errors import AttribkitError
from ..runtime import Runtime


@contextmanager
def process_group(rt: Runtime) -> Iterator[None]:
    """The workers' process group for the duration of a training (nccl on GPUs, gloo on CPUs),
    unless the caller made one already."""
    if rt.world_size == 1 or dist.is_initialized():
        yield
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise AttribkitError(f"worker {rt.rank} of {rt.world_size}: {' and '.join(missing)} not set; start the "
                             f"workers with torchrun (python -m torch.distributed.run)")
    backend = "nccl" if rt.is_cuda else "gloo"
    dist.init_process_group(backend, rank=rt.rank, world_size=rt.world_size,
                            **({"device_id": rt.device} if rt.is_cuda else {}))
    try:
        yield
    finally:
        dist.destroy_process_group()


def my_share(indices: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """This worker's contiguous slice of ``indices``: the slices of all workers, in rank order, are ``indices``."""
    return indices.tensor_split(rt.world_size)[rt.rank] if rt.world_size > 1 else indices


def add_up(values: list[torch.Tensor], rt: Runtime) -> list[torch.Tensor]:
    """Each value summed over the workers (a no-op for one)."""
    if rt.world_size == 1:
        return values
    out = []
    for value in values:
        total = value.clone()
        dist.all_reduce(total)
        out.append(total)
    return out


def gather(outputs: dict[str, torch.Tensor], rt: Runtime) -> dict[str, torch.Tensor]:
    """Every worker's outputs (CPU tensors of its share), concatenated in rank order."""
    if rt.world_size == 1:
        return outputs
    found: list = [None] * rt.world_size
    dist.all_gather_object(found, outputs)
    return {k: torch.cat([part[k] for part in found]) for k in outputs}


def share_buffers(module: torch.nn.Module, rt: Runtime) -> None:
    """Worker 0's buffers (BatchNorm's running statistics) on every worker. DDP sends them at the
    start of each forward, after which each worker's batch moves its own: at the end of an epoch they
    differ, and the sharded evaluation and the weights must be worker 0's on every worker."""
    if rt.world_size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def barrier(rt: Runtime) -> None:
    if rt.world_size > 1:
        dist.barrier()
