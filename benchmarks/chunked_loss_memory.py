"""
Peak memory of one forward + backward of GPT-2 124M at B=8, T=1024 on the CPU, with the plain lm_head +
cross-entropy and with train.py's chunked_loss (F.linear_cross_entropy: the logits are never materialised).
Each way runs in a fresh process and reports its peak resident memory, so neither inherits the other's allocations.

    python benchmarks/chunked_loss_memory.py                      # GPT-2 124M, B=8, T=1024
    python benchmarks/chunked_loss_memory.py --batch_size=2 --block_size=256 --n_layer=2
"""
import argparse
import os
import resource
import subprocess
import sys
import time

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one(args):
    """The child: build, run forward + backward once, print the peak RSS in MiB and the loss."""
    sys.path.insert(0, REPO_DIR)
    import torch
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=args.n_layer, n_head=12, n_embd=768, block_size=args.block_size, vocab_size=50304,
                          dropout=0.0, bias=False))
    model.chunked_loss = args.chunked
    idx = torch.randint(50304, (args.batch_size, args.block_size))
    targets = torch.randint(50304, (args.batch_size, args.block_size))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # weights and buffers, before the step
    t0 = time.time()
    _, loss = model(idx, targets)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{peak:.0f} {base:.0f} {loss.item():.6f} {time.time() - t0:.1f}")


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--block_size', type=int, default=1024)
    parser.add_argument('--n_layer', type=int, default=12)
    parser.add_argument('--chunked', type=int, default=-1, help=argparse.SUPPRESS)  # set in the child processes
    args = parser.parse_args()
    if args.chunked >= 0:
        args.chunked = bool(args.chunked)
        one(args)
        sys.exit(0)
    print(f"GPT-2 ({args.n_layer} layers, 768 wide, vocab 50304), B={args.batch_size}, T={args.block_size}, "
          f"one forward + backward on the CPU, float32")
    rows = {}
    for chunked in (0, 1):
        out = subprocess.run([sys.executable, __file__, f'--batch_size={args.batch_size}',
                              f'--block_size={args.block_size}', f'--n_layer={args.n_layer}', f'--chunked={chunked}'],
                             capture_output=True, text=True, check=True).stdout.split()
        peak, base, loss, seconds = float(out[0]), float(out[1]), float(out[2]), float(out[3])
        rows[chunked] = peak
        print(f"{'chunked' if chunked else 'plain  '}: peak RSS {peak:,.0f} MiB (model built: {base:,.0f} MiB, "
              f"step: +{peak - base:,.0f} MiB), loss {loss:.6f}, {seconds:.1f}s")
    logits = args.batch_size * args.block_size * 50304 * 4 / 2**20
    print(f"plain / chunked peak: {rows[0] / rows[1]:.2f}x; the float32 logits alone are {logits:,.0f} MiB "
          f"(and as much again for their gradient)")
