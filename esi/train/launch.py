"""Start pretraining from a notebook (or any Python program) as a child process.

    from esi.train.launch import launch_training
    launch_training(["params/demo.yaml"], overrides=["train_epochs=3"], nproc_per_node=2)

A Jupyter kernel must never fork itself once CUDA is initialised, and torch.distributed wants one process per
GPU anyway, so the notebook does not train in its own process: it runs the command a terminal would run,

    python -m torch.distributed.run --nnodes 1 --nproc-per-node N --node-rank 0 --max-restarts R \
        --master-addr ADDR --master-port PORT -m esi.train --config a.yaml --set train_<setting>=value ...

(or plain `python -m esi.train ...` with `use_torchrun=False`), streams its output into the cell as it comes,
and raises `TrainingFailed` (with the last lines of output) if it exits with an error. Interrupting the cell
stops the child and its workers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Mapping, Sequence

from esi.paths import repo_root, resolve
from esi.train.distributed import DEFAULT_MASTER_PORT

# Lines of output quoted in the error of a failed run.
_TAIL_LINES = 40


class TrainingFailed(subprocess.CalledProcessError):
    """The training command exited with a non-zero status; str() quotes the end of its output."""

    def __str__(self) -> str:
        command = " ".join(self.cmd)
        tail = "\n".join((self.output or "").splitlines()[-_TAIL_LINES:])
        return f"training exited with status {self.returncode}: {command}\n--- last output ---\n{tail}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it).

    host: the interface to bind to when asking.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def training_command(config_files: Sequence[str | os.PathLike] | str | os.PathLike,
                     overrides: Sequence[str] | Mapping[str, object] = (), nproc_per_node: int = 1,
                     nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None,
                     master_port: int | None = None, use_torchrun: bool = True,
                     python: str | None = None, max_restarts: int = 0) -> list[str]:
    """The argument list that `launch_training` runs (see there for the parameters)."""
    if isinstance(config_files, (str, os.PathLike)):
        config_files = [config_files]
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"nproc_per_node and nnodes must be >= 1, got {nproc_per_node} and {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be in 0..{nnodes - 1}, got {node_rank}")
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
    python = python or sys.executable
    train_args = ["-m", "esi.train"]
    for path in config_files:
        resolved = resolve(path)
        if not resolved.exists():
            raise FileNotFoundError(f"config file not found: {resolved}")
        train_args += ["--config", str(resolved)]
    if isinstance(overrides, Mapping):
        # Values are parsed as YAML on the other side; JSON is YAML, and spells None, True and lists right.
        items = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    else:
        items = list(overrides)
    for item in items:
        train_args += ["--set", str(item)]

    if not use_torchrun:
        if nproc_per_node != 1 or nnodes != 1 or max_restarts != 0:
            raise ValueError("use_torchrun=False runs one process once; more processes or restarts need torchrun")
        return [python, *train_args]
    if nnodes > 1 and master_addr is None:
        raise ValueError("a multi-node run needs master_addr: the host name of node 0, reachable from every node")
    if master_addr is None:
        master_addr = "127.0.0.1"
    if master_port is None:
        # One node: any free port, so two runs on one machine never collide. Several nodes must agree on
        # it in advance, so they get torch's default unless told otherwise.
        master_port = free_port(master_addr) if nnodes == 1 else DEFAULT_MASTER_PORT
    return [python, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc_per_node),
            "--node-rank", str(node_rank), "--max-restarts", str(max_restarts), "--master-addr", master_addr,
            "--master-port", str(master_port), *train_args]


def launch_training(config_files: Sequence[str | os.PathLike] | str | os.PathLike,
                    overrides: Sequence[str] | Mapping[str, object] = (), nproc_per_node: int = 1, nnodes: int = 1,
                    node_rank: int = 0, master_addr: str | None = None, master_port: int | None = None,
                    stream: bool = True, use_torchrun: bool = True, env: Mapping[str, str] | None = None,
                    python: str | None = None, max_restarts: int = 0) -> subprocess.CompletedProcess:
    """Run `esi.train` in a child process (under torchrun) and wait for it.

    Args:
        config_files: params YAML file(s), later ones overriding earlier ones (relative paths from the repository
            root).
        overrides: settings that win over the files, with their full params keys (as `--set` takes them):
            "KEY=VALUE" strings or a mapping, e.g. ["train_epochs=3", "train_batch_size=32"].
        nproc_per_node: processes on this node (one per GPU; on CPU, gloo processes).
        nnodes: nodes in the job; start the same call on every node with its own node_rank.
        node_rank: this node's index, 0 .. nnodes - 1.
        master_addr: host name of node 0 (required with several nodes; default 127.0.0.1 for one).
        master_port: rendezvous port on node 0; default: a free port for one node, 29500 for several.
        stream: copy the child's output to this process's stdout while it runs (a notebook cell shows it live,
            progress bars included); False: run quietly and only return the output.
        use_torchrun: False runs plain `python -m esi.train` (one process only, no torch.distributed).
        env: extra environment variables for the child (e.g. {"CUDA_VISIBLE_DEVICES": "0,1"}).
        python: the interpreter to run; default: this one (sys.executable).
        max_restarts: how many times torchrun may restart all workers after one fails (a worker killed, a node
            lost); each restart resumes from the newest checkpoint (train_resume: auto, the default).

    Returns:
        subprocess.CompletedProcess with args, returncode 0 and stdout (stdout and stderr, interleaved).

    Raises:
        TrainingFailed: the command exited with a non-zero status; the message quotes the end of its output.
        KeyboardInterrupt: the caller was interrupted; the child and its workers are stopped first.
    """
    command = training_command(config_files, overrides, nproc_per_node, nnodes, node_rank, master_addr,
                               master_port, use_torchrun, python, max_restarts)
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONUNBUFFERED"] = "1"   # lines arrive as they are printed, not when a buffer fills
    # The child runs from the repository root so that `-m esi.train` imports this checkout.
    process = subprocess.Popen(command, cwd=repo_root(), env=child_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    chunks: list[str] = []
    try:
        _pump(process, chunks, stream)
        returncode = process.wait()
    except BaseException:
        _stop(process)
        raise
    output = "".join(chunks)
    if returncode != 0:
        raise TrainingFailed(returncode, command, output=output)
    return subprocess.CompletedProcess(command, returncode, stdout=output)


def _pump(process: subprocess.Popen, chunks: list[str], stream: bool) -> None:
    """Read the child's output until it closes, keeping it and (if `stream`) echoing it unchanged."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = process.stdout.fileno()
    while True:
        # os.read returns whatever is there (at least one byte), so tqdm's "\r" updates show at once and
        # keep their carriage returns, which the notebook renders as one updating bar.
        data = os.read(fd, 1 << 16)
        if not data:
            break
        text = decoder.decode(data)
        chunks.append(text)
        if stream and text:
            sys.stdout.write(text)
            sys.stdout.flush()
    tail = decoder.decode(b"", final=True)
    if tail:
        chunks.append(tail)
    process.stdout.close()


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the child's whole process group: SIGINT (torchrun forwards it to its workers), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass

