"""Work split over the processes of a ``torchrun`` launch: one rank per device, items by rank.

``torchrun --nproc_per_node=N -m facelib project IN OUT ...`` starts N copies of the command
with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment (several machines: the
same command on each with ``--nnodes``/``--rdzv-endpoint``; torchrun's rendezvous joins them).
The batch commands then:

1. call :func:`init` once: it joins the process group (``nccl`` when the rank has a GPU,
   ``gloo`` on CPU) and picks the rank's device, ``cuda:LOCAL_RANK`` or the CPU;
2. take their share of the sorted item list with :func:`shard` (round robin, so every item is
   done by exactly one rank, the same one on every run);
3. write each result themselves (atomically), recording ``rank`` and ``world_size``;
4. combine what every rank did with :func:`gather` so that rank 0 prints one summary.

Without torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) everything here is a no-op: rank 0 of
1, the whole list, no process group. Nothing here starts processes itself.

Per-item randomness must not depend on the rank or batch position: :func:`item_seed` derives a
seed from the item's name, so a distributed run reproduces a single-process run.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch

from .errors import InputError

__all__ = ["DistInfo", "world", "init", "shard", "gather", "barrier", "item_seed", "is_main", "finish"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a launch.

    Attributes:
        rank: 0 .. world_size - 1 over all machines; world_size: processes in the launch.
        local_rank: index among this machine's processes (selects its GPU).
        device: the device this rank works on ("cuda:<local_rank>" or "cpu"); None before :func:`init`.
        backend: "nccl", "gloo" or None (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str | None = None
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"${name}: expected an integer (set by torchrun), got {value!r}") from None


def world() -> DistInfo:
    """Rank, world size and local rank of this process (from the process group when one is
    joined, else from torchrun's environment; 0 of 1 without torchrun)."""
    import torch.distributed as dist

    local = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, backend=dist.get_backend())
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"$RANK / $WORLD_SIZE: rank {rank} is not in a launch of {world_size} process(es)")
    return DistInfo(rank, world_size, local)


def is_main() -> bool:
    """True on rank 0 (and without torchrun)."""
    return world().rank == 0


def init(device: "str | torch.device | None" = "auto") -> DistInfo:
    """Join torchrun's process group (when launched by it) and choose this rank's device.

    Args:
        device: "auto" = ``cuda:LOCAL_RANK`` when CUDA is available (several ranks on one GPU
            are allowed when there are fewer GPUs than ranks: ``LOCAL_RANK % device_count``),
            else the CPU; "cpu" forces the CPU (and the gloo backend); "cuda" picks the rank's
            GPU; anything else is used as given (single process only).
    Returns:
        :class:`DistInfo` with ``device`` set. Calling it again returns the same answer.
    Raises:
        InputError: a bad ``$RANK``/``$WORLD_SIZE``, or a fixed device such as "cuda:1" in a
            multi-process launch (each rank chooses its own).
    """
    import torch.distributed as dist

    info = world()
    want = str(device) if device is not None else "auto"
    cuda = torch.cuda.is_available() and want != "cpu" and not want.startswith("mps")
    if info.distributed and want not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {want}: under torchrun each rank uses its own device; "
                         "pass auto, cuda or cpu")
    if cuda and want in ("auto", "cuda"):
        dev = f"cuda:{info.local_rank % torch.cuda.device_count()}"
    elif want == "auto":
        dev = "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() \
            and not info.distributed else "cpu"
    else:
        dev = want
    backend = None
    if info.distributed:
        backend = "nccl" if dev.startswith("cuda") else "gloo"
        if dev.startswith("cuda"):
            torch.cuda.set_device(torch.device(dev))
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
            log.info("rank %d of %d joined the process group (%s) on %s", info.rank, info.world_size, backend, dev)
        backend = dist.get_backend()
    return DistInfo(info.rank, info.world_size, info.local_rank, dev, backend)


def shard(items: Sequence[T], info: DistInfo | None = None) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item starting at ``rank``.

    Give every rank the same list in the same order (e.g. sorted paths); the shares are then
    disjoint and together cover the list, and each item goes to the same rank on every run.
    """
    info = info or world()
    return list(items)[info.rank::info.world_size]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without a process group.

    Every rank of the launch must call it (it is a collective)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def finish() -> None:
    """Leave the process group (no-op without one); call once at the end of a command."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def item_seed(name: str, seed: int = 0) -> int:
    """A seed for one item that depends only on its name and the run's ``seed``:
    ``seed + (first 31 bits of SHA-256(name))``. Use a stable name such as the path
    relative to the input folder (with ``/`` separators)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int(seed) + (int.from_bytes(digest[:4], "big") >> 1)
