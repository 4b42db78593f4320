"""
AdamW against Muon (optimizer='muon') on the CPU quick-start model: 4 layers, 4 heads, 128 wide, context 64,
batch 12, Tiny Shakespeare characters, nanoGPT's cosine schedule from 1e-3 to 1e-4 with 100 warmup iterations,
seed 1337. Every run trains with train.py's own pieces (configure_optimizers, get_lr, train_step, estimate_loss)
on the same batches, one right after the other, and is evaluated every --eval_interval iterations on the same
--eval_iters val batches. Printed: the val loss at fixed iterations, then the iterations and the training time
each run needs to reach the first run's final val loss, and its time per iteration (evaluations not counted).

    python data/shakespeare_char/prepare.py && python benchmarks/muon.py
    python benchmarks/muon.py --runs=adamw:1e-3,adamw:3e-3,muon:0.01,muon:0.02,muon:0.04 --iters=2000

A run is optimizer:learning_rate[:weight_decay]: adamw's learning_rate is the peak of the schedule; muon's is
muon_learning_rate (the Blocks' matrices), its AdamW part (embeddings, LayerNorms) keeping --adamw_lr. With
--rounds=2 the runs go again in reverse order, and the times are averaged (the machine is shared and noisy).
"""
import argparse
import os
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig  # noqa: E402
from nanogpt.loader import TokenLoader  # noqa: E402
from nanogpt.tokenfiles import Dataset, dataset_dir  # noqa: E402
from train import estimate_loss, get_lr, train_step  # noqa: E402

SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, dropout=0.0)
BATCH, SEED, WARMUP, BETAS = 12, 1337, 100, (0.9, 0.99)


def train(data, name: str, lr: float, weight_decay: float, args) -> dict:
    """Val losses {iter: loss} of one run, and its training time per iteration."""
    torch.manual_seed(SEED)
    model = GPT(GPTConfig(vocab_size=len(data.vocab), **SHAPE), seed=SEED)
    base_lr = lr if name == 'adamw' else args.adamw_lr
    optimizer = model.configure_optimizers(weight_decay, base_lr, BETAS, 'cpu', name, muon_learning_rate=lr)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    loader = TokenLoader(data, 'train', BATCH, SHAPE['block_size'], len(data.vocab), 'cpu', SEED)
    evals = {'val': TokenLoader(data, 'val', BATCH, SHAPE['block_size'], len(data.vocab), 'cpu', SEED + 1)}
    losses, trained = {}, 0.0
    for it in range(args.iters + 1):
        if it % args.eval_interval == 0 or it == args.iters:
            losses[it] = estimate_loss(model, evals, args.eval_iters, nullcontext())['val']
        if it == args.iters:
            break
        step_lr = get_lr(it, base_lr, WARMUP, args.iters, base_lr / 10)
        t0 = time.perf_counter()
        train_step(model, optimizer, scaler, loader, 1, nullcontext(), 1.0, step_lr)
        trained += time.perf_counter() - t0
    return {'losses': losses, 'ms': trained / args.iters * 1000}


def reach(losses: dict, target: float) -> int | None:
    """The first evaluated iteration whose val loss is at or below target."""
    return next((it for it, loss in sorted(losses.items()) if loss <= target), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', default='adamw:1e-3,muon:0.02')
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--eval_interval', type=int, default=50)
    parser.add_argument('--eval_iters', type=int, default=50)
    parser.add_argument('--adamw_lr', type=float, default=1e-3, help="the AdamW part's learning rate in muon runs")
    parser.add_argument('--weight_decay', type=float, default=0.1)
    parser.add_argument('--rounds', type=int, default=1)
    args = parser.parse_args()
    data = Dataset(dataset_dir('shakespeare_char'))
    if data.vocab is None:
        raise SystemExit("error: data/shakespeare_char holds no character vocabulary: run python "
                         "data/shakespeare_char/prepare.py")
    runs = []
    for spec in args.runs.split(','):
        name, lr, *wd = spec.split(':')
        runs.append((spec, name, float(lr), float(wd[0]) if wd else args.weight_decay))
    results = {spec: [] for spec, *_ in runs}
    for r in range(args.rounds):
        for spec, name, lr, wd in (runs if r % 2 == 0 else runs[::-1]):
            result = train(data, name, lr, wd, args)
            results[spec].append(result)
            print(f"{spec}: val loss {result['losses'][args.iters]:.4f} at {args.iters}, {result['ms']:.1f} ms/iter",
                  flush=True)
    # the targets: each AdamW run's final val loss
    targets = {spec: results[spec][0]['losses'][args.iters] for spec, name, *_ in runs if name == 'adamw'}
    evaluated = sorted(results[runs[0][0]][0]['losses'])
    marks = [min(evaluated, key=lambda i: abs(i - args.iters * k / 4)) for k in (1, 2, 3, 4)]
    print(f"\nval loss at iterations {marks}; then, for each AdamW run's final val loss, the iterations and the "
          f"training time each run needs to reach it; ms per iteration, mean of {args.rounds} round(s)\n")
    print(" | ".join(['run', *map(str, marks), *(f"iters, time to {t:.4f} ({s})" for s, t in targets.items()),
                      'ms/iter']))
    print(" | ".join(['---'] * (len(marks) + len(targets) + 2)))
    for spec, *_ in runs:
        first = results[spec][0]['losses']
        ms = sum(x['ms'] for x in results[spec]) / len(results[spec])
        cells = []
        for target in targets.values():
            it = reach(first, target)
            cells.append(f"{it}, {it * ms / 1000:.1f} s" if it is not None else '-')
        print(" | ".join([spec, *(f"{first[m]:.4f}" for m in marks), *cells, f"{ms:.1f}"]))


if __name__ == '__main__':
    main()
