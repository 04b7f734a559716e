"""The distributed context of a training run: who am I, how many are we, and joining the process group.

The launcher decides the context and this module only reads it: torchrun sets RANK, WORLD_SIZE and
LOCAL_RANK (plus MASTER_ADDR/MASTER_PORT); SLURM's srun sets SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID,
and the rendezvous address is then derived from SLURM_NODELIST and SLURM_JOB_ID. Without either, the run
is a single process and every helper here works without `torch.distributed` being initialised.

Under torchrun every attempt (the first start and each restart after a lost worker) joins a store of its own,
hosted by rank 0, never the store torchrun's agent keeps across restarts (see `attempt_store`).

The collectives the losses call inside the forward pass live with the losses (esi.models.distributed).

Importing this module never touches CUDA (a CPU-only login node, or a parent process that forks workers,
must be able to import it); `init_distributed` is the first place that may.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import secrets
import socket
import time
from typing import Mapping

import torch
import torch.distributed as dist

from esi.models.distributed import is_initialized

DEFAULT_MASTER_PORT = 29500
# Where rank 0 posts, on torchrun's store, the port and token of the store it hosts for this attempt.
NOTICE_KEY = "esi/attempt_store"
# Seconds a rank gives a posted store to answer before it reads the notice again (it may be a dead attempt's).
PROBE_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    rank: global index of this process, 0 .. world_size-1.
    world_size: number of processes in the job.
    local_rank: index of this process on its node (selects its GPU).
    source: which launcher the values came from: "torchrun", "slurm" or "single".
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    source: str = "single"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """The first host name of a SLURM node list such as "gpu[003-005,009],cpu01" -> "gpu003".

    nodelist: the value of SLURM_NODELIST / SLURM_JOB_NODELIST.
    """
    nodelist = nodelist.strip()
    if not nodelist:
        raise ValueError("SLURM_NODELIST is empty; cannot derive MASTER_ADDR")
    # The first entry ends at the first comma that is not inside brackets.
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if match is None:
        raise ValueError(f"cannot parse SLURM_NODELIST {nodelist!r}")
    prefix, ranges = match.group(1), match.group(3)
    if ranges is None:
        return prefix
    first_range = ranges.split(",")[0]
    return prefix + first_range.split("-")[0]  # keeps zero padding, e.g. "003"


def read_context(environ: Mapping[str, str] | None = None) -> DistContext:
    """The distributed context described by the environment (torchrun first, then SLURM, else single).

    environ: the variables to read; defaults to `os.environ`.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistContext(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            source="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return DistContext(
            rank=int(env["SLURM_PROCID"]),
            # A step launched with `srun -n K` inside a larger allocation runs K tasks, not SLURM_NTASKS.
            world_size=int(env.get("SLURM_STEP_NUM_TASKS", env["SLURM_NTASKS"])),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            source="slurm",
        )
    return DistContext()


def rendezvous_from_slurm(environ: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(MASTER_ADDR, MASTER_PORT) for a job launched with srun, unless already set in the environment.

    The address is the first node of the allocation. The port is derived from the job id so that two
    jobs sharing a node do not collide on the same default port.

    environ: the variables to read; defaults to `os.environ`.
    """
    env = os.environ if environ is None else environ
    addr = env.get("MASTER_ADDR")
    if addr is None:
        nodelist = env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if nodelist is None:
            raise RuntimeError("SLURM job without SLURM_NODELIST; set MASTER_ADDR to the first node's host name")
        addr = first_host(nodelist)
    if "MASTER_PORT" in env:
        port = int(env["MASTER_PORT"])
    elif "SLURM_JOB_ID" in env:
        port = 20000 + int(re.sub(r"\D", "", env["SLURM_JOB_ID"]) or 0) % 20000
    else:
        port = DEFAULT_MASTER_PORT
    return addr, port


def uses_agent_store(environ: Mapping[str, str] | None = None) -> bool:
    """True when torchrun told its workers to rendezvous on its agent's store, which outlives each attempt.

    environ: the variables to read; defaults to `os.environ`.
    """
    env = os.environ if environ is None else environ
    return env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def attempt_store(context: DistContext, timeout: datetime.timedelta) -> dist.TCPStore:
    """A fresh TCPStore for this attempt's process group, hosted by rank 0; the agent's store only carries its address.

    torchrun (torch >= 2.5) points MASTER_ADDR/MASTER_PORT at a store its agent keeps across restarts. After a
    lost worker, the restarted group finds the previous attempt's rendezvous keys there and connects to the
    addresses of dead processes: gloo fails after its timeout, NCCL may pick up a stale id and hang
    (pytorch/pytorch#135712). So rank 0 starts a store on a free port and posts "<address> <port> <token>" on the
    agent's store (its address as the agent's host sees it: rank 0 need not run on that host when several nodes
    rendezvous); the other ranks accept a posted store only if it answers with the same token: a notice left by
    the previous attempt names a closed port (or another store), and they read the notice again until rank 0's
    new one is there.

    context: this process's place in the job.
    timeout: how long to wait for rank 0's notice, and for the keys of the rendezvous on the new store.
    """
    host = os.environ["MASTER_ADDR"]
    notices = dist.TCPStore(host, int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    if context.rank == 0:
        store = dist.TCPStore(host, 0, is_master=True, timeout=timeout)   # port 0: the OS picks a free one
        token = secrets.token_hex(8)
        store.set("token", token)
        notices.set(NOTICE_KEY, f"{_address_towards(host)} {store.port} {token}")
        return store
    deadline = time.monotonic() + timeout.total_seconds()
    probe = datetime.timedelta(seconds=PROBE_TIMEOUT_S)
    while time.monotonic() < deadline:
        address, port, token = notices.get(NOTICE_KEY).decode().split()   # waits until some attempt's rank 0 posted
        # A plain connect first: a dead attempt's closed port is refused at once and quietly (a TCPStore client
        # retries it for its whole timeout and logs every try).
        try:
            socket.create_connection((address, int(port)), timeout=PROBE_TIMEOUT_S).close()
            store = dist.TCPStore(address, int(port), is_master=False, timeout=probe)
            if store.get("token").decode() == token:
                store.set_timeout(timeout)
                return store
        except (OSError, RuntimeError):   # refused, or not the posted store (DistError is a RuntimeError)
            pass
        time.sleep(0.1)
    raise RuntimeError(f"rank {context.rank}: no store from rank 0 at {host} within {timeout} (key {NOTICE_KEY!r} "
                       f"on torchrun's store {host}:{os.environ['MASTER_PORT']})")


def _address_towards(host: str) -> str:
    """This machine's address on the route to `host` (the interface other nodes reach it by; no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((socket.gethostbyname(host), 9))
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(host)


def init_distributed(backend: str | None = None, timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group described by the environment; a no-op for a single process.

    backend: "nccl" or "gloo"; default nccl when CUDA is available, else gloo (CPU).
    timeout_minutes: how long collectives wait for a missing rank before failing.

    Returns the context. On CUDA, also selects this process's GPU (`LOCAL_RANK`).
    """
    context = read_context()
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), context.local_rank, context.source)
    if not context.distributed:
        return context
    if context.source == "slurm":
        addr, port = rendezvous_from_slurm()
        os.environ.setdefault("MASTER_ADDR", addr)
        os.environ.setdefault("MASTER_PORT", str(port))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(context.local_rank)
    timeout = datetime.timedelta(minutes=timeout_minutes)
    # Under torchrun's shared store, a store of this attempt's own; else env://: rank 0 hosts one at MASTER_PORT.
    store = attempt_store(context, timeout) if uses_agent_store() else None
    dist.init_process_group(
        backend=backend,
        init_method=None if store is not None else "env://",
        store=store,
        rank=context.rank,
        world_size=context.world_size,
        timeout=timeout,
    )
    return context


def destroy_distributed() -> None:
    """Leave the process group (call at the end of a run; harmless when not distributed)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_initialized():
        dist.barrier()
