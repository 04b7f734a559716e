"""The distributed context and the contrastive loss under DDP: 2 CPU processes with gloo, started by torchrun.

The module is also the worker script: `torchrun --standalone --nproc_per_node 2 test_dist_gloo.py OUT` runs
`worker(OUT)` in each process, which writes its losses and gradients to OUT for the tests to compare with
a single process on the concatenated batch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributed import TCPStore

from esi.models import distributed as collectives
from esi.models.losses import caption_loss, contrastive_loss, logit_scale_value
from esi.train import distributed as dist

REPO_ROOT = Path(__file__).resolve().parents[1]
WORLD_SIZE = 2
LOCAL_BATCH = 4


# ---- reading the context from the environment (no processes needed) ----------------------------------

def test_torchrun_variables_take_precedence_over_slurm():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert dist.read_context(env) == dist.DistContext(rank=3, world_size=8, local_rank=1, source="torchrun")


def test_slurm_variables_describe_an_srun_job():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    context = dist.read_context(env)
    assert (context.rank, context.world_size, context.local_rank, context.source) == (5, 8, 1, "slurm")
    assert context.distributed and not context.is_main


def test_no_launcher_means_a_single_process():
    context = dist.read_context({})
    assert context == dist.DistContext(rank=0, world_size=1, local_rank=0, source="single")
    assert not context.distributed and context.is_main


@pytest.mark.parametrize("nodelist, first", [
    ("gpu042", "gpu042"),
    ("gpu[003-005,009],cpu01", "gpu003"),
    ("node[7,9]", "node7"),
    ("a01,a02", "a01"),
])
def test_master_address_is_the_first_node_of_the_slurm_node_list(nodelist, first):
    assert dist.first_host(nodelist) == first


def test_slurm_rendezvous_port_comes_from_the_job_id_unless_set():
    addr, port = dist.rendezvous_from_slurm({"SLURM_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "123456"})
    assert (addr, port) == ("gpu12", 20000 + 123456 % 20000)
    explicit = {"SLURM_NODELIST": "gpu[12-13]", "MASTER_ADDR": "head", "MASTER_PORT": "40000"}
    assert dist.rendezvous_from_slurm(explicit) == ("head", 40000)


def test_only_torchruns_shared_store_makes_the_workers_host_their_own():
    assert dist.uses_agent_store({"TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert not dist.uses_agent_store({"TORCHELASTIC_USE_AGENT_STORE": "False"})   # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
    assert not dist.uses_agent_store({})                                          # srun, a single process


def test_rank_0_posts_the_address_other_nodes_reach_it_by():
    assert dist._address_towards("127.0.0.1") == "127.0.0.1"
    address = dist._address_towards(socket.gethostname())
    socket.inet_aton(address)                                 # an IPv4 address, not a name only this node resolves


def test_a_restarted_rank_skips_the_previous_attempts_notice_and_joins_rank_0s_new_store(monkeypatch):
    """The agent's store still holds the notice of the attempt before: a closed port, then a live store with another
    token (a port the OS handed out again). Rank 1 must wait for rank 0's new notice and take its store."""
    timeout = timedelta(seconds=30)
    agent = TCPStore("127.0.0.1", 0, is_master=True, timeout=timeout)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(agent.port))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    other = TCPStore("127.0.0.1", 0, is_master=True, timeout=timeout)
    other.set("token", "0123456789abcdef")
    joined = {}
    rank_1 = threading.Thread(target=lambda: joined.update(store=dist.attempt_store(dist.DistContext(1, 2), timeout)))
    for stale in (f"127.0.0.1 {closed_port} 0123456789abcdef", f"127.0.0.1 {other.port} fedcba9876543210"):
        agent.set(dist.NOTICE_KEY, stale)
        if not rank_1.is_alive():
            rank_1.start()
        time.sleep(0.5)
        assert "store" not in joined
    store = dist.attempt_store(dist.DistContext(0, 2), timeout)
    rank_1.join(timeout=30)
    assert joined["store"].port == store.port != other.port
    joined["store"].set("from rank 1", "hello")
    assert store.get("from rank 1") == b"hello"


def test_helpers_work_without_a_process_group():
    x = torch.randn(3, 2)
    assert collectives.get_rank() == 0 and collectives.get_world_size() == 1
    dist.barrier()
    assert collectives.all_gather_with_grad(x) is x


# ---- two processes ----------------------------------------------------------------------------------

class TwoTowers(nn.Module):
    """A small ECG tower (the real ConvNeXt V2 atto) and a text projection, as the ESI model pairs them."""

    def __init__(self):
        super().__init__()
        from esi.models.registry import create_encoder

        self.ecg_encoder = create_encoder("convnextv2_atto")
        self.ecg_to_latent = nn.Linear(self.ecg_encoder.dim, 32, bias=False)
        self.text_to_latent = nn.Linear(24, 32, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, ecg, text_features, local_loss: bool):
        ecg_latents = nn.functional.normalize(self.ecg_to_latent(self.ecg_encoder.encode(ecg)), dim=-1)
        text_latents = nn.functional.normalize(self.text_to_latent(text_features), dim=-1)
        return contrastive_loss(ecg_latents, text_latents, logit_scale_value(self.logit_scale), local_loss)


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ecg = torch.randn(WORLD_SIZE * LOCAL_BATCH, 12, 256, generator=generator)
    text_features = torch.randn(WORLD_SIZE * LOCAL_BATCH, 24, generator=generator)
    return ecg, text_features


def caption_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Caption logits and targets of the global batch; rank 0's texts are much shorter than rank 1's."""
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(WORLD_SIZE * LOCAL_BATCH, 6, 11, generator=generator)
    targets = torch.randint(0, 11, (WORLD_SIZE * LOCAL_BATCH, 6), generator=generator)
    lengths = torch.tensor([1, 2, 1, 2, 6, 5, 6, 4])
    mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
    return logits, targets, mask


def fresh_towers() -> TwoTowers:
    torch.manual_seed(0)
    return TwoTowers()


def worker(out_dir: Path) -> None:
    """One rank: the contrastive loss and DDP-averaged gradients on its quarter of the global batch."""
    from torch.nn.parallel import DistributedDataParallel

    context = dist.init_distributed()  # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun; gloo on CPU
    rank = collectives.get_rank()
    ecg, text_features = global_batch()
    mine = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    result = {"context": context, "is_main": context.is_main}

    for local_loss in (False, True):
        model = DistributedDataParallel(fresh_towers())
        out = model(ecg[mine], text_features[mine], local_loss)
        out.loss.backward()
        key = "local" if local_loss else "global"
        result[key] = {
            "loss": out.loss.detach(),
            "labels": out.labels,
            "logits_shape": tuple(out.logits_per_ecg.shape),
            "grads": {name: p.grad.clone() for name, p in model.module.named_parameters()},
        }

    # Ranks with different batch sizes: rank r holds r + 2 rows whose values are its rank.
    rows = torch.full((rank + 2, 3), float(rank), requires_grad=True)
    gathered = collectives.all_gather_with_grad(rows)
    weights = torch.arange(gathered.shape[0], dtype=torch.float32)[:, None]
    (gathered * weights).sum().backward()
    result["uneven"] = {"gathered": gathered.detach(), "grad": rows.grad}

    # Caption loss with a different number of real tokens on each rank.
    logits, targets, mask = caption_batch()
    for across_ranks in (True, False):
        mine_logits = logits[mine].clone().requires_grad_(True)
        loss = caption_loss(mine_logits, targets[mine], mask[mine], across_ranks=across_ranks)
        # What DDP does with the gradients: average over ranks.
        grad, = torch.autograd.grad(loss, mine_logits)
        gathered = collectives.all_gather_with_grad(grad)
        result[f"caption_across_{across_ranks}"] = {"loss": loss.detach(), "grad": gathered / WORLD_SIZE}

    dist.barrier()
    torch.save(result, out_dir / f"rank{rank}.pt")
    dist.destroy_distributed()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}",
               __file__, str(out_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def single_process() -> dict:
    """The same model on the whole global batch in one process: the reference."""
    ecg, text_features = global_batch()
    model = fresh_towers()
    out = model(ecg, text_features, local_loss=False)
    out.loss.backward()
    return {"loss": out.loss.detach(), "grads": {name: p.grad.clone() for name, p in model.named_parameters()}}


def test_workers_read_their_rank_from_torchrun(ranks):
    contexts = [r["context"] for r in ranks]
    assert [(c.rank, c.world_size, c.source) for c in contexts] == [(0, 2, "torchrun"), (1, 2, "torchrun")]
    assert [r["is_main"] for r in ranks] == [True, False]


def test_global_negatives_score_each_rank_against_the_whole_batch(ranks):
    for rank, result in enumerate(ranks):
        assert result["global"]["logits_shape"] == (LOCAL_BATCH, WORLD_SIZE * LOCAL_BATCH)
        # Positives sit at this rank's offset in the gathered batch, not at 0..local_batch-1.
        assert result["global"]["labels"].tolist() == list(range(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH))


def test_global_negatives_reproduce_the_single_process_loss(ranks, single_process):
    mean_over_ranks = torch.stack([r["global"]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean_over_ranks, single_process["loss"])


def test_global_negatives_reproduce_the_single_process_gradients(ranks, single_process):
    names = list(single_process["grads"])
    expected = torch.cat([single_process["grads"][name].flatten() for name in names])
    for result in ranks:  # DDP leaves the same averaged gradients on every rank
        actual = torch.cat([result["global"]["grads"][name].flatten() for name in names])
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


def test_local_loss_uses_per_rank_negatives_and_differs(ranks, single_process):
    for result in ranks:
        assert result["local"]["logits_shape"] == (LOCAL_BATCH, LOCAL_BATCH)
        assert result["local"]["labels"].tolist() == list(range(LOCAL_BATCH))
    mean_over_ranks = torch.stack([r["local"]["loss"] for r in ranks]).mean()
    assert abs(mean_over_ranks - single_process["loss"]) > 1e-3
    grad_gap = (ranks[0]["local"]["grads"]["ecg_to_latent.weight"]
                - single_process["grads"]["ecg_to_latent.weight"]).abs().max()
    assert grad_gap > 1e-4


def test_caption_loss_weighs_every_token_of_the_global_batch_equally(ranks):
    logits, targets, mask = caption_batch()
    logits.requires_grad_(True)
    expected = caption_loss(logits, targets, mask)        # one process, all 8 texts
    expected_grad, = torch.autograd.grad(expected, logits)
    mean_over_ranks = torch.stack([r["caption_across_True"]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean_over_ranks, expected.detach())
    for result in ranks:
        torch.testing.assert_close(result["caption_across_True"]["grad"], expected_grad)
    # Averaging each rank's own tokens instead weighs rank 0's few tokens more: a different loss and gradient.
    per_rank = torch.stack([r["caption_across_False"]["loss"] for r in ranks]).mean()
    assert abs(per_rank - expected.detach()) > 1e-2
    assert (ranks[0]["caption_across_False"]["grad"] - expected_grad).abs().max() > 1e-3


def test_all_gather_with_grad_handles_uneven_batches(ranks):
    expected = torch.cat([torch.zeros(2, 3), torch.ones(3, 3)])
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["uneven"]["gathered"], expected)
        # Both ranks' losses weight row i by i; rank r's rows start at offset 0 or 2: gradient = 2 * weight.
        offset = 0 if rank == 0 else 2
        weights = torch.arange(offset, offset + rank + 2, dtype=torch.float32)[:, None].expand(-1, 3)
        torch.testing.assert_close(result["uneven"]["grad"], 2 * weights)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
