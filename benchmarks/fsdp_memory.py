"""
Per-rank memory of DDP and FSDP (train.py's data_parallel) for a GPT-2-shaped model, on 1, 2 and 4 gloo ranks of
this machine's CPU: bench.py under torchrun, once per wrapper and rank count, each in fresh processes.

    python benchmarks/fsdp_memory.py                          # GPT-2 124M, B=1, T=128, 1/2/4 ranks
    python benchmarks/fsdp_memory.py --ranks=1,2 --n_layer=2  # quicker

Two figures per rank, the largest over the ranks:
- params+grads+optimizer: the bytes of parameters, gradients and AdamW state this rank holds, measured from its
  tensors at the optimizer step (when all three exist). DDP holds all of it on every rank (16 bytes a parameter in
  float32); FSDP a 1/ranks shard. Not counted: FSDP's transient all-gathered copy of the Block it runs, the root's
  weights while the root runs, and DDP's gradient buckets.
- peak RSS: the whole process at its peak during the timed steps (Linux's VmHWM, reset after the burn-in, once
  the memory setup freed is handed back): everything the step holds, activations and buffers included, and also
  torch's own libraries and the process group, whose share ("before the model") does not shrink with more ranks.
  A CPU figure: what a GPU would hold is bench.py's peak memory on CUDA.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(ranks: int, data_parallel: str, args, out: str) -> dict:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={ranks}', 'bench.py',
           '--device=cpu', '--compile=False', '--real_data=False', '--dtype=float32',
           f'--data_parallel={data_parallel}',
           f'--n_layer={args.n_layer}', f'--n_head={args.n_head}', f'--n_embd={args.n_embd}',
           f'--block_size={args.block_size}', f'--batch_size={args.batch_size}', '--burnin_steps=1',
           f'--benchmark_steps={args.steps}', f'--json={out}']
    proc = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    if proc.returncode != 0:
        raise SystemExit(f"error: {data_parallel} on {ranks} ranks failed:\n{proc.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f)['results'][0]


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ranks', default='1,2,4')
    parser.add_argument('--n_layer', type=int, default=12)
    parser.add_argument('--n_head', type=int, default=12)
    parser.add_argument('--n_embd', type=int, default=768)
    parser.add_argument('--block_size', type=int, default=128)
    parser.add_argument('--batch_size', type=int, default=1)
    parser.add_argument('--steps', type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in map(int, args.ranks.split(',')):
            for data_parallel in ('ddp', 'fsdp'):
                r = run(ranks, data_parallel, args, os.path.join(tmp, f'{data_parallel}{ranks}.json'))
                rows.append((ranks, data_parallel, r))
                print(f"{ranks} rank(s), {data_parallel}: params+grads+optimizer {r['state_gib']:.3f} GiB, "
                      f"peak RSS {r['peak_rss_gib']:.2f} GiB, loss {r['loss']:.4f}, {r['ms']:.0f} ms/iter", flush=True)
    params = rows[0][2]['params']
    print(f"\nGPT {args.n_layer} layers x {args.n_embd}, {params / 1e6:.1f}M parameters (without wpe), float32, "
          f"B={args.batch_size}, T={args.block_size}; per rank, the largest over the ranks")
    print("ranks | wrapper | params+grads+optimizer | vs 1 rank | peak RSS | RSS before the model")
    for ranks, data_parallel, r in rows:
        one = next(r1 for n, dp, r1 in rows if dp == data_parallel and n == rows[0][0])
        print(f"{ranks} | {data_parallel} | {r['state_gib']:.3f} GiB | {r['state_gib'] / one['state_gib']:.2f} | "
              f"{r['peak_rss_gib']:.2f} GiB | {r['base_rss_gib']:.2f} GiB")
