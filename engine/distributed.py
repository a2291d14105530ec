"""Process-group setup from torchrun's environment, the few collectives the loop needs, and the
process-wide determinism switch."""

from __future__ import annotations

import datetime
import logging
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DEVICES",
    "DistInfo",
    "DistributedFaultError",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "describe_fault",
    "init_distributed",
    "is_distributed",
    "resolve_device",
    "roll_call",
    "set_determinism",
    "world_size",
]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA where a GPU is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


ROLL_CALL_S = 5.0  # after a failed collective: how long survivors wait for each other's answer

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class DistributedFaultError(RuntimeError):
    """A collective failed: a rank died or did not answer within ``trainer.dist_timeout_s``."""


def init_distributed(
    device: str = "auto", backend: str | None = None, timeout_s: float | None = None
) -> DistInfo:
    """Join the process group that ``torchrun`` (or Slurm via submitit) describes, if any.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        backend: process-group backend; default NCCL on CUDA, Gloo on CPU.
        timeout_s: a collective waiting longer fails (``trainer.dist_timeout_s``) instead of
            hanging; ``None``: torch's default.

    Ranks other than 0 log warnings and errors only (their info lines would repeat rank 0's).

    Raises:
        ValueError: on an unknown device, or ``"cuda"`` without a GPU.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is visible")
    use_cuda = resolve_device(device).type == "cuda"
    _export_slurm_environment()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s) if timeout_s is not None else None
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"), timeout=timeout)
        _logger.info("rank %d/%d joined the process group on %s", rank, world_size, torch_device)
    if rank != 0:  # one copy of every progress line and summary: rank 0's; warnings from all
        logging.getLogger().setLevel(logging.WARNING)
    return DistInfo(rank, world_size, local_rank, torch_device)


def _export_slurm_environment() -> None:
    """Under Slurm (submitit) without torchrun, derive RANK, WORLD_SIZE, MASTER_ADDR... from the
    job's environment, as torchrun would have set them."""
    if "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError as error:
        raise RuntimeError(
            "a multi-task Slurm job without torchrun needs submitit: pip install -e '.[slurm]'"
        ) from error
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic matmuls


def set_determinism(deterministic: bool) -> None:
    """Deterministic kernels (bitwise-reproducible runs), or cuDNN's autotuner, which picks the
    fastest convolution algorithm per shape (the shapes of a training run are fixed).

    Deterministic mode also sets ``CUBLAS_WORKSPACE_CONFIG`` unless the user did: without it,
    ``torch.use_deterministic_algorithms(True)`` makes the first CUDA matmul raise.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


def is_distributed() -> bool:
    """Whether this process is in a process group (torchrun, Slurm), not alone."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The processes of the run: the process group's size, or 1."""
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (picklable), indexed by rank; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def roll_call(wait_s: float = ROLL_CALL_S) -> list[int] | None:
    """Ranks that do not answer through the rendezvous store within ``wait_s`` seconds.

    Every surviving rank writes its key after a failure and waits for the others'; the missing
    ones are dead or stuck. ``None`` if the store itself is gone (rank 0 hosts it: rank 0 died).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set(f"dcls_fault/alive/{rank}", "1")
        keys = {r: f"dcls_fault/alive/{r}" for r in range(world)}
        deadline = time.monotonic() + wait_s
        while True:
            missing = [r for r, key in keys.items() if not store.check([key])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)
    except Exception:  # the store lives in rank 0's process: unreachable when it died
        return None


def describe_fault(error: BaseException, timeout_s: float | None) -> str:
    """One line for an error under DDP: this rank, the ranks that stopped answering, the cause."""
    rank, world = dist.get_rank(), dist.get_world_size()
    missing = roll_call()
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if missing == []:
        return f"rank {rank} of {world}: every rank answers the roll call (no peer died): {cause}"
    who = (
        "rank 0 (the rendezvous host) is unreachable"
        if missing is None
        else f"rank(s) {', '.join(map(str, missing))} died or hung"
    )
    return (
        f"rank {rank} of {world}: a collective failed; {who} "
        f"(trainer.dist_timeout_s={timeout_s}): {cause}"
    )
