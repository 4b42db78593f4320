"""Run by tests/test_fit.py under torchrun (2 gloo ranks): fit.fit_step where the ranks see different things.
`ddp`: four probes in turn, each rank printing what it got: rank 1 runs out of memory above 2 rows (rank 0 fits
8), then rank 1's torch.compile fails (rank 0's works), then rank 1 meets an error of its own, then not even one row
fits on rank 1.
`fsdp`: the same model sharded, rank 1 out of memory in the middle of the step, after the weights were gathered
and while rank 0 goes on to the gradients' reduce-scatter: rank 1 must end the run alone, not join a collective.
"""
import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from nanogpt.fit import fit_step
from nanogpt.parallel import shard_model
from nanogpt.runtime import end_distributed, setup_runtime


class Block(torch.nn.Module):
    def __init__(self, rank: int):
        super().__init__()
        self.rank, self.linear = rank, torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x)


class Uneven(torch.nn.Module):
    """A model out of memory on rank 1 above `rows` rows (the CPU allocator refuses a petabyte, a real refusal); where
    `fail` is set, failing there with that error instead, and where `compile_fails`, failing there compiled."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank, self.rows, self.fail, self.compile_fails, self.compiled = rank, 2, None, False, False
        self.transformer = torch.nn.Module()  # shard_model's layout: a unit per Block, and the root
        self.transformer.h = torch.nn.ModuleList([Block(rank), Block(rank)])

    def forward(self, x, y):
        h = self.transformer.h[0](torch.ones(x.shape + (4,)))
        if self.rank == 1 and self.compiled and self.compile_fails:
            raise RuntimeError('backend compiler failed: no C++ compiler')
        if self.rank == 1 and self.fail is not None:
            raise self.fail
        if self.rank == 1 and len(x) > self.rows:
            torch.empty(10 ** 15 // 4)
        return None, self.transformer.h[1](h).mean()


def say(text: str):
    """One line of this rank's, written whole (one write): the ranks share the output."""
    sys.stdout.write(f"rank {os.environ['RANK']}: {text}\n")
    sys.stdout.flush()


if __name__ == '__main__':
    runtime = setup_runtime('cpu', 'float32', backend='gloo')
    rank = runtime.rank
    model = Uneven(rank)
    if sys.argv[1] == 'fsdp':
        shard_model(model, 'cpu', 'float32')
        optimizer = torch.optim.AdamW(model.parameters())
        try:
            fit_step(lambda compile: model, runtime, 8, 4, runtime.ctx, optimizer, True, False, True)
        except SystemExit as e:
            say(str(e))
            os._exit(1)  # as the error hook would end it
        say("fitted")  # not reached: rank 0 waits on rank 1 in the step
        sys.exit(0)
    optimizer = torch.optim.AdamW(model.parameters())
    made = []

    def wrap(compile):  # a new DDP each time, as parallel.wrap_model makes it (its construction is a collective)
        made.append(compile)
        model.compiled = compile
        return DDP(model)
    # 1. each rank fits its own size; all take the smallest
    _, rows, _ = fit_step(wrap, runtime, 8, 4, runtime.ctx, optimizer, True, False, False)
    say(f"{rows} rows")
    # 2. torch.compile fails on rank 1 only: every rank goes on uncompiled, at the size that fits everywhere
    model.compile_fails = True
    made.clear()
    _, rows, compiled = fit_step(wrap, runtime, 8, 4, runtime.ctx, optimizer, True, True, False)
    say(f"{rows} rows, compiled {compiled}, made {made}")
    # 3. an error of rank 1's own, not one to handle: rank 1 raises it, rank 0 says where it is
    model.fail = ValueError('a bug on rank 1')
    try:
        fit_step(wrap, runtime, 8, 4, runtime.ctx, optimizer, True, False, False)
    except (ValueError, SystemExit) as e:
        say(f"{type(e).__name__}: {e}")
    # 4. not even one row fits on rank 1: every rank ends, one of them says why
    model.fail, model.rows = None, 0
    try:
        fit_step(wrap, runtime, 8, 4, runtime.ctx, optimizer, True, False, False)
    except SystemExit as e:
        say(f"exit {e.code}")
    end_distributed()
