"""torchrun integration: process group set-up from the environment, rank helpers, tear-down."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tnt_cli.devices import resolve_device
from tnt_cli.errors import SettingError, TntError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU); a no-op for one process."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_available():
        raise TntError("this torch build has no torch.distributed: run without torchrun")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend, kwargs = process_group_options(device)
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world)


def process_group_options(device: torch.device) -> tuple[str, dict]:
    """(backend, init_process_group keywords): NCCL bound to this process's GPU on CUDA (where the build has
    NCCL), else gloo, which also runs CPU processes on a machine that has GPUs."""
    if device.type == "cuda" and dist.is_nccl_available():
        return "nccl", {"device_id": device}
    return "gloo", {}


def pick_device(requested: str) -> torch.device:
    """'auto' / 'cuda': this process's GPU (LOCAL_RANK under torchrun) when CUDA is available, else the CPU.

    Under torchrun with several processes a GPU number (`cuda:0`) is refused: every process would share it, which
    NCCL cannot do; and a LOCAL_RANK without its own GPU is a clear error rather than a CUDA one mid-set-up."""
    device = resolve_device(requested)
    if device.type == "cuda":
        if device.index is not None and launched_by_torchrun():
            raise SettingError("{device} {requested} under torchrun would put every process on one GPU: use "
                               "{device} cuda (each process takes the GPU of its LOCAL_RANK)",
                               requested=requested)  # fmt: skip
        if device.index is None:
            local_rank, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
            if local_rank >= count:
                raise SettingError("process LOCAL_RANK {rank} has no GPU of its own: torch sees {count} CUDA GPU(s); "
                                   "start at most that many processes per machine", rank=local_rank,
                                   count=count)  # fmt: skip
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def wrap_ddp(module: torch.nn.Module, device: torch.device, *, find_unused: bool) -> torch.nn.Module:
    """`module` in DistributedDataParallel. Only parameters that require grad are reduced: with heads-only
    training that is just the heads."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, find_unused_parameters=find_unused)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (so all ranks stop at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
