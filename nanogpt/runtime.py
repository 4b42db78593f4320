"""
The runtime that train.py, sample.py, bench.py and the evaluation scripts share: one setup of the device, the DDP
process group, dtype, autocast and seeds (setup_runtime), and its end under torchrun (end_distributed); the RNG state
of a device (rng_state, set_rng_state); rank-0 printing; the all-rank guard on stop requests and non-finite steps;
the device's peak FLOPS for MFU and its description.
"""

import importlib.util
import os
import platform
import signal
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch

PTDTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def print0(*args, **kwargs):
    """print on the master process only (RANK 0, or no torchrun at all)"""
    if int(os.environ.get('RANK', 0)) == 0:
        print(*args, **kwargs)


@dataclass
class Runtime:
    device: str  # e.g. 'cuda:3', 'mps', 'cpu'
    device_type: str  # 'cuda', 'mps' or 'cpu', for autocast, the scaler and fused AdamW
    dtype: str  # 'float32', 'bfloat16' or 'float16'
    ctx: object  # autocast context for forward passes (nullcontext in float32)
    ddp: bool
    rank: int
    local_rank: int
    world_size: int

    @property
    def master_process(self) -> bool:
        return self.rank == 0


def default_device() -> str:
    if torch.cuda.is_available():
        return 'cuda'
    if torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'


def device_type_of(device: str) -> str:
    """'cpu', 'cuda' or 'mps' for a device name (not 'auto'); SystemExit for one no run can use, or not here."""
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        device_type = None
    if device_type not in ('cpu', 'cuda', 'mps'):  # 'meta' and the like hold no data to train or sample
        raise SystemExit(f"error: device={device!r} is not a device this project runs on: use auto, cpu, cuda, "
                         f"cuda:N or mps")
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f"error: device={device!r} but CUDA is not available here: use --device=cpu or --device=mps")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        raise SystemExit("error: device='mps' but MPS is not available here: use --device=cpu")
    return device_type


def distributed_env(ddp: bool = True) -> tuple[bool, int, int, int]:
    """(ddp, rank, local_rank, world_size) from the variables torchrun sets, checked together: set by hand and
    inconsistent, they would make a process wait forever for ranks that never come. ddp=False: a script that runs
    in one process (sample.py) leaves them alone."""
    names = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')
    env = {k: os.environ[k] for k in names if k in os.environ}
    if not ddp or not {'RANK', 'WORLD_SIZE'} & set(env):
        return False, 0, 0, 1
    given = ' '.join(f"{k}={v}" for k, v in env.items())
    if not all(v.isdigit() for v in env.values()) or not {'RANK', 'WORLD_SIZE'} <= set(env):
        raise SystemExit(f"error: {given}: RANK and WORLD_SIZE are set together, as integers, by torchrun: launch "
                         f"with torchrun, or unset them")
    rank, world_size = int(env['RANK']), int(env['WORLD_SIZE'])
    if rank >= world_size or not {'MASTER_ADDR', 'MASTER_PORT'} <= set(os.environ):
        raise SystemExit(f"error: {given}: a rank below WORLD_SIZE, MASTER_ADDR and MASTER_PORT are needed to meet "
                         f"the other ranks: launch with torchrun, or unset them")
    return True, rank, int(env.get('LOCAL_RANK', 0)), world_size


def setup_runtime(device: str = 'auto', dtype: str = 'auto', seed: int = 1337, backend: str = 'auto',
                  ddp: bool = True) -> Runtime:
    """Set up the device, the DDP process group when launched by torchrun, the autocast context and the seeds.
    ddp=False for a script that runs in one process whatever the environment."""
    ddp, rank, local_rank, world_size = distributed_env(ddp)
    if device == 'auto':
        device = default_device()
    device_type = device_type_of(device)
    if not -2 ** 63 <= seed <= 2 ** 63 - world_size:  # seed + rank, for torch.manual_seed
        raise SystemExit(f"error: seed={seed}: a seed must fit in 64 bits (-2**63 to 2**63 - rank)")
    if ddp:
        if backend == 'auto':
            backend = 'nccl' if device_type == 'cuda' else 'gloo'
        if device_type == 'cuda':
            device = f'cuda:{local_rank}'  # one GPU per process
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():  # bench.py sets up again for each device or dtype it sweeps
            if world_size > 1 and 'TORCHELASTIC_RUN_ID' not in os.environ:  # set by hand: a rank that waits says so
                print(f"rank {rank} of {world_size}: meeting the other ranks at {os.environ['MASTER_ADDR']}:"
                      f"{os.environ['MASTER_PORT']}", file=sys.stderr, flush=True)
            torch.distributed.init_process_group(backend=backend)
    if dtype == 'auto':
        if device_type == 'cuda':
            dtype = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        else:
            dtype = 'float32'
    if dtype not in PTDTYPES:
        raise SystemExit(f"error: dtype={dtype!r}: use one of {', '.join(PTDTYPES)} or auto")
    torch.manual_seed(seed + rank)  # every rank draws its own dropout masks (the loaders seed themselves)
    if device_type == 'cuda':
        torch.set_float32_matmul_precision('high')  # TF32 in matmuls and convolutions
        torch.backends.cudnn.allow_tf32 = True
    ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=PTDTYPES[dtype])
    return Runtime(device, device_type, dtype, ctx, ddp, rank, local_rank, world_size)


def rng_state(device) -> dict:
    """This process's random number generators that a step on device draws from (dropout): {'cpu': ..., and 'cuda'
    or 'mps' on those devices}, for set_rng_state to give back."""
    device = torch.device(device)
    state = {'cpu': torch.get_rng_state()}
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    elif device.type == 'mps':
        state['mps'] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict, device):
    """The generators as rng_state found them (those of another device type in state are left alone)."""
    device = torch.device(device)
    torch.set_rng_state(state['cpu'])
    if 'cuda' in state and device.type == 'cuda':
        torch.cuda.set_rng_state(state['cuda'], device)
    elif 'mps' in state and device.type == 'mps':
        torch.mps.set_rng_state(state['mps'])


# what a config key's value needs that not every installation has: (the value, whether it is here, what is missing)
NEEDS = {
    'chunked_loss': (True, lambda: hasattr(torch.nn, 'LinearCrossEntropyOptions'),
                     f"needs torch >= 2.13 (F.linear_cross_entropy), this is torch {torch.__version__}: upgrade torch"),
    'optimizer': ('muon', lambda: hasattr(torch.optim, 'Muon'),
                  f"needs torch >= 2.9 (torch.optim.Muon), this is torch {torch.__version__}: upgrade torch"),
    'wandb_log': (True, lambda: importlib.util.find_spec('wandb') is not None,
                  "needs the wandb package, and the wandb package is not installed: pip install wandb"),
}


def check_needs(config: dict):
    """SystemExit, before any work, when the config asks for what this installation does not have (a torch too old
    for chunked_loss or Muon, no wandb for wandb_log), saying how to get it."""
    for key, (value, present, missing) in NEEDS.items():
        if config.get(key) == value and not present():
            raise SystemExit(f"error: {key}={value!r} {missing}, or leave {key} at its default")


def end_distributed(code: int = 0):
    """End a torchrun process once its work is done: wait for every rank, free the process group, flush the output
    and leave without Python's interpreter shutdown. gloo's worker threads can still be releasing the last
    collective's tensors when the main thread returns; a thread that needs the GIL during interpreter shutdown
    aborts the whole process ("terminate called without an active exception", a torchrun failure after a run that
    succeeded)."""
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class RunGuard:
    """What ends a training run early, decided by every rank together after each step: a stop request (SIGTERM,
    what SLURM and cloud preemption send, Ctrl-C, or SIGHUP from a closed terminal; caught here so the run ends at
    a step boundary, with a checkpoint) and a step skipped for a non-finite loss or gradient (printed, recorded
    through log(iter=..., skipped=...), and the run stops after max_bad_steps in a row). Under DDP or FSDP a rank
    deciding alone would deadlock or diverge from the others."""

    def __init__(self, runtime: Runtime, max_bad_steps: int, out_dir: str, log):
        self.runtime, self.max_bad_steps, self.out_dir, self.log = runtime, max_bad_steps, out_dir, log
        self.signum = 0  # the stop signal received, 0 for none
        self.bad_steps = 0  # steps in a row skipped for a non-finite loss or gradient
        signal.signal(signal.SIGTERM, self._catch)
        signal.signal(signal.SIGINT, self._catch)
        # a closed terminal or a dropped ssh session, unless the run ignores it (nohup)
        if hasattr(signal, 'SIGHUP') and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signal.signal(signal.SIGHUP, self._catch)

    def _catch(self, signum, frame):
        self.signum = signum

    def check(self, iter_num: int, finite: bool) -> tuple[bool, int]:
        """(whether the step was skipped on any rank, the stop signal any rank received), through one small
        all-reduce; SystemExit after max_bad_steps skipped steps in a row."""
        flags = torch.tensor([float(not finite), float(self.signum)], device=self.runtime.device)
        if self.runtime.ddp:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        bad, stop = bool(flags[0]), int(flags[1])
        self.bad_steps = self.bad_steps + 1 if bad else 0
        if bad:
            print0(f"iter {iter_num}: non-finite loss or gradients: step skipped ({self.bad_steps} in a row)")
            self.log(iter=iter_num, skipped=self.bad_steps)
        if bad and self.bad_steps >= self.max_bad_steps:
            raise SystemExit(f"error: {self.bad_steps} steps in a row had a non-finite loss or gradients (iters "
                             f"{iter_num - self.bad_steps + 1} to {iter_num}), so training stopped; the checkpoint "
                             f"in {self.out_dir} holds finite weights: resume from it with a lower learning_rate, "
                             f"or raise max_bad_steps")
        return bad, stop


# -----------------------------------------------------------------------------
# Peak dense bf16 tensor-core FLOPS, matched against torch.cuda.get_device_name(); first match wins,
# so the more specific names come first
PEAK_BF16_FLOPS = [
    ('GB200', 2.5e15), ('B200', 2.25e15), ('B100', 1.75e15),
    ('H200', 989e12), ('GH200', 989e12), ('H100 NVL', 835e12), ('H100 PCIe', 756e12), ('H100', 989e12),
    ('H800', 989e12), ('H20', 148e12),
    ('A100', 312e12), ('A800', 312e12), ('A10G', 70e12), ('A10', 125e12), ('A30', 165e12), ('A40', 150e12),
    ('L40S', 362e12), ('L40', 181e12), ('L4', 121e12),
    ('RTX 6000 Ada', 364e12), ('RTX A6000', 155e12),
    ('RTX 5090', 210e12), ('RTX 4090', 165e12), ('RTX 4080', 97e12), ('RTX 3090', 71e12), ('RTX 3080', 59e12),
    ('V100', 125e12), ('T4', 65e12),  # no bf16 on these two: their fp16 peak
    ('MI300X', 1307e12), ('MI325X', 1307e12), ('MI250X', 383e12),
]


def device_peak_flops(device) -> float | None:
    """The peak bf16 FLOPS of a CUDA device from PEAK_BF16_FLOPS, or None when it is not a known GPU."""
    device = torch.device(device)
    if device.type != 'cuda' or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def describe_device(runtime, compile: bool, chunked_loss: bool) -> str:
    """What a person needs to compare GPUs: the device, versions, dtype, compile and attention kernel."""
    if runtime.device_type == 'cuda':
        name = torch.cuda.get_device_name(runtime.device)
        versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
        flash = torch.backends.cuda.flash_sdp_enabled() and torch.cuda.get_device_capability(runtime.device)[0] >= 8
        attention = 'SDPA, flash kernel' if flash else 'SDPA, memory-efficient or math kernel'
    else:
        name = f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
        versions = f"torch {torch.__version__}"
        attention = 'SDPA (CPU kernel)'
    return (f"device {runtime.device}: {name}; {versions}; dtype {runtime.dtype}; compile {compile}; "
            f"attention {attention}; loss {'chunked' if chunked_loss else 'plain'}")
