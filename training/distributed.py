"""Running the training loop under torchrun: which process this is, and the few collective
operations the loop needs. One process without torchrun is the world_size == 1 case.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; the process group
uses `gloo` on CPU and `nccl` on CUDA, as PyTorch recommends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vaesdk.base.errors import InvalidArgumentError


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join(device: str = "auto") -> Processes:
    """This process's place in the torchrun job (started with the torchrun environment), or a
    single process, and the device it trains on: its local rank's GPU when `device` is "cuda",
    or "auto" and torch sees a GPU; else the CPU. Joins the default process group when there
    are several processes (nccl on GPUs, gloo on CPUs)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("--device cuda, but torch sees no CUDA GPU; use --device cpu (or auto)")
    if device != "cpu" and torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise InvalidArgumentError(
                f"process {local_rank} on this machine has no GPU of its own ({torch.cuda.device_count()} GPU(s)); "
                "start one process per GPU, or train on the CPU with --device cpu"
            )
        torch.cuda.set_device(local_rank)
        where, backend = torch.device("cuda", local_rank), "nccl"
    else:
        where, backend = torch.device("cpu"), "gloo"
    if world_size <= 1:
        return Processes(device=where)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Processes(dist.get_rank(), dist.get_world_size(), where, backend)


def leave(processes: Processes) -> None:
    if processes.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, processes: Processes) -> torch.Tensor:
    """Element-wise sum over the processes (float64, so the reduction adds no rounding of its own)."""
    if processes.world_size == 1:
        return values
    out = values.to(processes.device, torch.float64)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.cpu()


class Objective(torch.nn.Module):
    """model.loss as a module's forward, which DistributedDataParallel wraps: DDP averages
    gradients over the processes in the backward pass of whatever its forward returned."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        return self.model.loss(images, **kwargs)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(nproc_per_node: int, module_args: list[str]) -> list[str]:
    """The torchrun command that starts `nproc_per_node` processes of `python -m <module_args>`
    on this machine, meeting over loopback on a free port (multi-node jobs call torchrun
    themselves, with --nnodes, --node_rank and a c10d rendezvous endpoint)."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={nproc_per_node}", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={free_loopback_port()}",
        "-m", *module_args,
    ]  # fmt: skip


def launch(nproc_per_node: int, module_args: list[str]) -> int:
    """Run the job under torchrun and wait for it; returns torchrun's exit status."""
    return subprocess.call(torchrun_command(nproc_per_node, module_args))
