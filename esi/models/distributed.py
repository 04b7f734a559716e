"""Collectives the losses run inside the forward pass: differentiable all-gather, mean over ranks, batch sizes.

Every helper works without `torch.distributed` being initialised (one process): it then returns its input.
The process group itself is set up by the training entry point (esi.train.distributed).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

# The collectives below run inside the model's forward pass. Under torch.compile they stay eager (a graph break
# each): Dynamo would otherwise trace them as functional collectives, which on some versions leave work
# unwaited at exit; these are small tensors, so compiling them gains nothing.
_eager = torch.compiler.disable


def is_initialized() -> bool:
    """True when a process group is up."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_initialized() else 1


@_eager
def all_gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """The batch size of every rank, in rank order ([n] when not distributed).

    n: this rank's batch size.
    device: where the small exchange tensor lives (must match the backend: CUDA for nccl).
    """
    if not is_initialized():
        return [n]
    mine = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(mine) for _ in range(get_world_size())]
    dist.all_gather(sizes, mine)
    return [int(s.item()) for s in sizes]


@_eager
def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `x` over all ranks, without gradient (`x` itself when not distributed).

    x: the same shape on every rank; every rank must call this together.
    """
    if not is_initialized() or get_world_size() == 1:
        return x
    total = x.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / get_world_size()


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's rows; the backward pass returns to each rank the summed gradient of its rows.

    Every rank computes its loss from the gathered tensor, so the gradient of rank r's rows has a part from
    every rank's loss. Summing them (all_reduce) and keeping one's own slice is what makes the gradient of
    the mean loss over ranks (DDP then averages) equal the single-process gradient of the whole batch.
    all_reduce is used instead of reduce_scatter because gloo has no reduce_scatter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank, longest = get_rank(), max(sizes)
        # all_gather needs equal shapes: pad every rank's rows to the longest batch, strip after.
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        buffers = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(buffers, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([buf[:n] for buf, n in zip(buffers, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


@_eager
def all_gather_with_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Every rank's `x` concatenated along dim 0, in rank order, differentiable w.r.t. the local `x`.

    x: (n, ...) this rank's rows; ranks may hold different n.
    sizes: every rank's n, if already known (saves one small collective); see `all_gather_sizes`.

    Returns x itself when not distributed. Every rank must call this (and later backward) together.
    """
    if not is_initialized() or get_world_size() == 1:
        return x
    if sizes is None:
        sizes = all_gather_sizes(x.shape[0], device=x.device)
    return _AllGatherWithGrad.apply(x, sizes)
