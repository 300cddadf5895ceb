"""Ranks: the process group ``torchrun`` starts, and the few messages the ranks of a sweep
exchange (rank 0's settings verdict, everyone's result at the end). Without a launcher every
function here is a no-op on one process."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch

from ...errors import FeatvizError
from ..devices import default_device


def distributed_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the environment ``torchrun`` sets, or None when
    the process was not started by a launcher."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise FeatvizError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers") from None
    return rank, world, local


@contextlib.contextmanager
def distributed(device: str | None = None) -> Iterator[tuple[int, int, str]]:
    """Join the ``torchrun`` process group when there is one and yield (rank, world size,
    device); without a launcher yield (0, 1, device) and start nothing. ``device`` None means
    :func:`~featviz.face.devices.default_device`. Under a launcher a CUDA device becomes
    ``cuda:LOCAL_RANK`` unless it names its index, with the NCCL backend; otherwise gloo. The
    group is destroyed on exit.

    Args:
        device: the device to use; None for the default device.
    """
    import torch.distributed as dist

    env = distributed_env()
    device = device or default_device()
    cuda = str(device).startswith("cuda")
    if env is None:
        yield 0, 1, device
        return
    if not dist.is_available():
        raise FeatvizError("this PyTorch build has no torch.distributed; run without torchrun")
    rank, world, local = env
    if cuda:
        device = device if ":" in str(device) else f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
    # a rank may wait at the final gather for hours while others finish their share
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(days=7))
    try:
        yield rank, world, device
        # every rank done with the group before any rank tears it down: a rank destroying it
        # while another still talks to it made gloo abort that process now and then
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _group_active() -> bool:
    """Whether this process is in an initialized process group (started by
    :func:`distributed` under ``torchrun``), so that collective calls are possible."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (itself without a process group)."""
    if not _group_active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` without a process
    group); each rank blocks here until all have called it."""
    if not _group_active():
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out
