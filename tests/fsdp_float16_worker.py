"""Run by tests/test_fsdp.py under torchrun (2 gloo ranks): one float16 FSDP step of train.train_step in which only
rank 1's shard of one gradient overflows. Every rank must skip the step and halve the scale (no rank may step
on its finite shards alone); tied weights must stay one parameter, and every Block be a unit of its own. Each rank
prints what it saw.
"""
import os
import sys

import torch
from torch.distributed.fsdp import FSDPModule

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig  # noqa: E402
from nanogpt.parallel import shard_model  # noqa: E402
from nanogpt.runtime import end_distributed  # noqa: E402
from train import train_step  # noqa: E402


class Batches:
    def __init__(self, rank):
        g = torch.Generator().manual_seed(rank)
        self.x, self.y = torch.randint(16, (2, 8), generator=g), torch.randint(16, (2, 8), generator=g)

    def next_batch(self):
        return self.x, self.y


if __name__ == '__main__':
    torch.distributed.init_process_group('gloo')
    rank = torch.distributed.get_rank()
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=16, dropout=0.0), seed=1)
    shard_model(model, 'cpu', 'float16')
    tied = model.transformer.wte.weight is model.lm_head.weight
    # one unit per Block and the root: only one Block's weights are ever gathered at a time
    units = sum(isinstance(m, FSDPModule) for m in model.modules())
    optimizer = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
    scaler = torch.amp.GradScaler('cpu')  # train.py's, as it makes it for float16
    unscale = scaler.unscale_

    def overflow_on_rank_1(opt):
        if rank == 1:  # after the reduce-scatter: only this rank's shard holds the inf
            model.transformer.h[0].mlp.c_fc.weight.grad.to_local().view(-1)[0] = float('inf')
        unscale(opt)
    scaler.unscale_ = overflow_on_rank_1
    before = [p.to_local().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    train_step(model, optimizer, scaler, Batches(rank), 2, torch.autocast('cpu', enabled=False), 1.0, 1e-2)
    unchanged = all(torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters()))
    print(f"rank {rank}: tied {tied}, units {units}, unchanged {unchanged}, scale {scale} -> {scaler.get_scale()}",
          flush=True)
    # and the next step, without the overflow, trains on every rank
    scaler.unscale_ = unscale
    train_step(model, optimizer, scaler, Batches(rank), 2, torch.autocast('cpu', enabled=False), 1.0, 1e-2)
    changed = all(not torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters()) if a.numel())
    print(f"rank {rank}: next step changed every shard {changed}", flush=True)
    end_distributed()
