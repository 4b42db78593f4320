"""Run under torchrun by tests/test_robust.py: RunGuard on two gloo ranks, where only rank 1 meets a non-finite step
and only rank 1 receives SIGTERM. Each rank prints what it decided; both must decide the same."""
import os
import signal
import sys

from nanogpt.runtime import RunGuard, end_distributed, setup_runtime

runtime = setup_runtime('cpu', 'float32')
guard = RunGuard(runtime, max_bad_steps=3, out_dir='unused', log=lambda **record: None)
decisions = [guard.check(1, finite=runtime.rank != 1)]  # a step that was not finite on rank 1 alone
if runtime.rank == 1:
    os.kill(os.getpid(), signal.SIGTERM)  # caught by the guard: a stop request that only rank 1 received
decisions.append(guard.check(2, finite=True))
decisions += [guard.check(3 + i, finite=i % 2 == 1) for i in range(6)]  # isolated bad steps, never 3 in a row
# one write: the ranks share one pipe, and print's pieces (the text, then the newline) would interleave
sys.stdout.write(f"rank {runtime.rank}: {decisions}\n")
sys.stdout.flush()
end_distributed()
