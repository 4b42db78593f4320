"""
What GPT-2's tanh GELU costs in the CPU quick-start training step, against the exact GELU that nanoGPT uses.
Both variants run train.py's own step on the same batch, in one process and in alternating rounds, because
the machine is shared and noisy. The loss is the same either way; only the time differs.

    python benchmarks/gelu_cpu.py                 # quick-start shape: 4 layers, 128 wide, batch 12 x 64
    python benchmarks/gelu_cpu.py --rounds=10 --steps=100
"""
import argparse
import contextlib
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanogpt.loader import SyntheticLoader  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from train import train_step  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=6)
    parser.add_argument('--steps', type=int, default=50)
    args = parser.parse_args()

    config = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, bias=False, dropout=0.0)
    loader = SyntheticLoader(12, config.block_size, config.vocab_size, 'cpu')  # the same batch for both variants
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    runs = {}
    for approximate in ('tanh', 'none'):
        model = GPT(config)
        for block in model.transformer.h:
            block.mlp.gelu = torch.nn.GELU(approximate=approximate)
        runs[approximate] = (model, model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu'))

    def step(name):
        model, optimizer = runs[name]
        return train_step(model, optimizer, scaler, loader, 1, contextlib.nullcontext(), 1.0, 1e-3)[0].item()

    print(f"CPU quick-start step, {torch.get_num_threads()} threads, {args.rounds} rounds of {args.steps} steps each")
    ms = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            for _ in range(3):  # warm-up
                step(name)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            ms[name].append((time.perf_counter() - t0) / args.steps * 1000)
    tanh, exact = statistics.median(ms['tanh']), statistics.median(ms['none'])
    print(f"tanh GELU (GPT-2, this repo): {tanh:.1f} ms/step (median)")
    print(f"exact GELU (nanoGPT):         {exact:.1f} ms/step (median)")
    print(f"tanh / exact: {tanh / exact:.3f}")


if __name__ == '__main__':
    main()
