"""
Per-rank memory of DDP and FSDP (train.py's data_parallel) for a GPT-2-shaped model, on 1, 2 and 4 gloo ranks of
this machine's CPU: bench.py's bench() under torchrun with a probe that counts host memory and the optimizer's state
(this script runs itself as the torchrun worker), once per wrapper and rank count, each in fresh processes.

    python benchmarks/fsdp_memory.py                          # GPT-2 124M, B=1, T=128, 1/2/4 ranks
    python benchmarks/fsdp_memory.py --ranks=1,2 --n_layer=2  # quicker
    python benchmarks/fsdp_memory.py --json=memory.json       # the rows also saved

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
import ctypes
import json
import os
import subprocess
import sys
import tempfile

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss(field: str = 'VmHWM') -> int:
    """This process's resident memory in bytes (Linux), -1 where unknown: now (VmRSS), or at its peak since the
    last reset (VmHWM)."""
    try:
        with open('/proc/self/status') as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith(field + ':')), -1)
    except OSError:
        return -1


def reset_peak_rss():
    """Linux: hand the heap memory that setup freed back to the system (glibc's malloc_trim), then restart the count
    of this process's peak resident memory (VmHWM), so that it covers what follows and not what setup once held."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except (OSError, AttributeError):
        pass


class HostMemory:
    """bench()'s probe: the bytes of parameters, gradients and optimizer state this rank holds (its shards only,
    under FSDP), at their most (at the optimizer step, when all three exist); the peak RSS over the timed steps; and
    the RSS before the model (torch and the process group)."""

    def __init__(self):
        self.base_rss = rss('VmRSS')
        self.state_peak = 0
        self.steps = 0  # optimizer steps seen: the burn-in ends after cfg.burnin_steps

    def watch(self, model, optimizer, cfg):
        from torch.distributed.tensor import DTensor

        def local(t):
            return t.to_local() if isinstance(t, DTensor) else t

        def after_step(optimizer, args, kwargs):
            tensors = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None)]
            tensors += [v for state in optimizer.state.values() for v in state.values() if hasattr(v, 'numel')]
            self.state_peak = max(self.state_peak, sum(local(t).numel() * local(t).element_size() for t in tensors))
            self.steps += 1
            if self.steps == cfg.burnin_steps:
                reset_peak_rss()  # the burn-in is over: the peak covers the timed steps only
        optimizer.register_step_post_hook(after_step)

    def read(self) -> dict:
        return {'peak_rss': rss(), 'state': self.state_peak, 'base_rss': self.base_rss}


def worker(argv: list[str]):
    """Under torchrun: bench() of one setting (bench.py's keys) with the HostMemory probe; rank 0 writes --json."""
    sys.path.insert(0, REPO_DIR)
    import bench
    from configurator import configure
    from nanogpt.runtime import end_distributed, setup_runtime
    cfg = configure(bench.defaults, argv, bench.RANGES, verbose=False)
    runtime = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    result = bench.bench(cfg, runtime, HostMemory())
    if runtime.master_process:
        with open(cfg.json, 'w') as f:
            json.dump({'results': [result]}, f)
    end_distributed()


def run(ranks: int, data_parallel: str, args, out: str) -> dict:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={ranks}',
           os.path.abspath(__file__), '--worker', '--device=cpu', '--compile=False', '--real_data=False',
           '--dtype=float32', f'--data_parallel={data_parallel}', f'--vocab_size={args.vocab_size}',
           f'--n_layer={args.n_layer}', f'--n_head={args.n_head}', f'--n_embd={args.n_embd}',
           f'--block_size={args.block_size}', f'--batch_size={args.batch_size}', '--burnin_steps=1',
           f'--benchmark_steps={args.steps}', f'--json={out}']
    proc = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    if proc.returncode != 0:
        raise SystemExit(f"error: {data_parallel} on {ranks} ranks failed:\n{proc.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f)['results'][0]


if __name__ == '__main__':
    if sys.argv[1:2] == ['--worker']:
        worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ranks', default='1,2,4')
    parser.add_argument('--n_layer', type=int, default=12)
    parser.add_argument('--n_head', type=int, default=12)
    parser.add_argument('--n_embd', type=int, default=768)
    parser.add_argument('--block_size', type=int, default=128)
    parser.add_argument('--batch_size', type=int, default=1)
    parser.add_argument('--vocab_size', type=int, default=50304)
    parser.add_argument('--steps', type=int, default=2)
    parser.add_argument('--json', default='', help='also write the rows to this file')
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
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([{'ranks': ranks, 'data_parallel': dp, **r} for ranks, dp, r in rows], f, indent=2)
