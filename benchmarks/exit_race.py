"""
How often a torchrun process that finished its work still dies at exit, with and without
nanogpt.runtime.end_distributed.

A gloo worker thread drops its reference to the last collective (and the tensors it holds) a moment after the main
thread has moved on. When that moment falls inside Python's interpreter shutdown, the thread cannot take the GIL
to release a tensor, and the process aborts with "terminate called without an active exception": torchrun then
fails a run whose every step and checkpoint succeeded. The window is small, so it shows on a loaded machine.

    python benchmarks/exit_race.py                 # 30 launches of each ending, 4 busy loops loading the CPUs
    python benchmarks/exit_race.py --runs=10 --load=0

Each launch is 2 gloo ranks doing what the end of a train.py run does (DDP steps, an all_reduce, the
all_gather_object of the RNG states), then either the plain ending (barrier, destroy_process_group, return) or
end_distributed(). The two endings alternate, so both see the same load.
"""
import argparse
import os
import subprocess
import sys



def worker(ending: str):
    import torch

    from nanogpt.runtime import end_distributed
    torch.distributed.init_process_group('gloo')
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64))
    for _ in range(3):
        model(torch.randn(4, 64)).sum().backward()
        flags = torch.zeros(1)
        torch.distributed.all_reduce(flags)
        rngs = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(rngs, torch.get_rng_state())
    if ending == 'end_distributed':
        end_distributed()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def launch(ending: str) -> tuple[bool, str]:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', __file__,
           f'--worker={ending}']
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    return proc.returncode == 0, proc.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--runs', type=int, default=30, help='launches of each ending')
    parser.add_argument('--load', type=int, default=4, help='busy-loop processes running alongside')
    parser.add_argument('--worker', choices=['plain', 'end_distributed'], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    busy = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(args.load)]
    failed = {'plain': 0, 'end_distributed': 0}
    aborts = 0
    try:
        for i in range(args.runs):
            for ending in failed:
                ok, stderr = launch(ending)
                if not ok:
                    failed[ending] += 1
                    aborts += 'terminate called without an active exception' in stderr
            print(f"{i + 1}/{args.runs}: failed plain {failed['plain']}, end_distributed {failed['end_distributed']}",
                  flush=True)
    finally:
        for p in busy:
            p.kill()
    print(f"launches that failed at exit, of {args.runs} each ({args.load} busy loops alongside):")
    for ending, n in failed.items():
        print(f"  {ending}: {n}")
    print(f"of the failures, {aborts} with 'terminate called without an active exception'")


if __name__ == '__main__':
    main()
