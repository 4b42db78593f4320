"""
Times the training step train.py runs (train.train_step: micro-batches, accumulation, clipping, GradScaler,
fused AdamW) on real data or synthetic tokens, and prints ms/iter, tokens/s, MFU and peak memory: the one command
to check a GPU.

    python bench.py                                   # GPT-2 124M, batch 12 x 1024, compiled (a small GPT on a CPU)
    python bench.py --batch_size=8,16,32,64           # a sweep: one line per value, then a table
    python bench.py --batch_size=16,32 --dtype=bfloat16,float16 --json=bench.json   # every combination, saved
    python bench.py --device=cpu --compile=False --n_layer=2 --n_embd=128 --block_size=64
    python bench.py --profile=True                    # a torch profiler trace in ./bench_log
    torchrun --standalone --nproc_per_node=8 bench.py --data_parallel=fsdp   # the DDP or FSDP step on 8 GPUs

Any key given as a comma-separated list is swept; a setting that runs out of memory is reported as such and the
sweep goes on. Without prepared data (data/<dataset>/train.bin) it times synthetic tokens and says so.
"""
import ctypes
import itertools
import json as jsonlib
import platform
import sys
import time
from contextlib import nullcontext

import torch
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

from common import dataset_dir, device_peak_flops, end_distributed, print0, setup_runtime
from configurator import config_defaults, configure
from data.loader import TokenLoader
from data.tokenfiles import split_files
from model import GPT, GPTConfig
from train import shard_model, train_step

# -----------------------------------------------------------------------------
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 1
bias = False
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
vocab_size = 50304
real_data = True  # read data/<dataset> through train.py's loader; False: random tokens
dataset = 'openwebtext'
seed = 1337
device = 'auto'  # 'auto' (cuda, else mps, else cpu), or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where supported on cuda, else float16; float32 elsewhere), 'float32', ...
compile = True  # use PyTorch 2.0 to compile the model to be faster
data_parallel = 'ddp'  # under torchrun: 'ddp' or 'fsdp', as train.py's
chunked_loss = False  # lm_head + cross-entropy in chunks (torch >= 2.13), as train.py's chunked_loss
grad_clip = 1.0
learning_rate = 6e-4
weight_decay = 1e-1
burnin_steps = 10  # not timed: compilation, allocator and autotuning warm-up
benchmark_steps = 20
profile = False  # use pytorch profiler, or just simple benchmarking?
peak_flops = None  # the device's peak FLOPS for MFU; None looks the GPU up in common.PEAK_BF16_FLOPS
json = ''  # also write the results to this file, for later comparison
# -----------------------------------------------------------------------------
defaults = config_defaults(globals())


class SyntheticLoader:
    """Random tokens, the same (B, T) batch every step: times the model alone."""

    def __init__(self, batch_size: int, block_size: int, vocab_size: int, device):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(vocab_size, (batch_size, block_size), generator=g).to(device)
        self.y = torch.randint(vocab_size, (batch_size, block_size), generator=g).to(device)

    def next_batch(self):
        return self.x, self.y


SHAPE_KEYS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size')
CPU_SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=8)  # a CPU times it in under a minute


def split_sweep(argv: list[str]) -> tuple[list[str], dict]:
    """The arguments less the swept ones, and {key: [value strings]} for each --key=a,b,c."""
    fixed, swept = [], {}
    for arg in argv:
        key, _, value = arg[2:].partition('=')
        if arg.startswith('--') and ',' in value:
            swept[key] = value.split(',')
        else:
            fixed.append(arg)
    return fixed, swept


def describe(runtime, cfg) -> str:
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
    return (f"device {runtime.device}: {name}; {versions}; dtype {runtime.dtype}; compile {cfg.compile}; "
            f"attention {attention}; loss {'chunked' if cfg.chunked_loss else 'plain'}")


def state_bytes(model, optimizer) -> int:
    """Bytes this rank holds of parameters, gradients and optimizer state (its shards only, under FSDP)."""
    def local(t):
        return t.to_local() if isinstance(t, DTensor) else t
    tensors = [p for p in model.parameters()] + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(local(t).numel() * local(t).element_size() for t in tensors)


def reset_peak_rss():
    """Linux: hand the heap memory that setup freed back to the system (glibc's malloc_trim), then restart the count
    of this process's peak resident memory (VmHWM), so that it covers what follows and not what setup once held."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except (OSError, AttributeError):
        pass


def rss(field: str = 'VmHWM') -> int:
    """This process's resident memory in bytes (Linux), -1 where unknown: now (VmRSS), or at its peak since
    reset_peak_rss (VmHWM)."""
    try:
        with open('/proc/self/status') as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith(field + ':')), -1)
    except OSError:
        return -1


def bench(cfg, runtime) -> dict:
    """Build the model, loader and optimizer of one setting, wrapped as train.py wraps it under torchrun (DDP or
    FSDP), and time train_step on it."""
    device, device_type, ctx = runtime.device, runtime.device_type, runtime.ctx
    fsdp = runtime.ddp and cfg.data_parallel == 'fsdp'
    base_rss = rss('VmRSS')  # torch and the process group, before the model
    model = GPT(GPTConfig(block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                          dropout=cfg.dropout, bias=cfg.bias, vocab_size=cfg.vocab_size), seed=cfg.seed)
    model.chunked_loss = cfg.chunked_loss
    if fsdp:
        shard_model(model, device_type, runtime.dtype)
        ctx = nullcontext()  # the mixed-precision policy replaces autocast
    else:
        model.to(device)
    if cfg.real_data:
        loader = TokenLoader(dataset_dir(cfg.dataset), 'train', cfg.batch_size, cfg.block_size, cfg.vocab_size,
                             device, cfg.seed, runtime.rank, runtime.world_size)
    else:
        loader = SyntheticLoader(cfg.batch_size, cfg.block_size, cfg.vocab_size, device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (0.9, 0.95), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(runtime.dtype == 'float16'))
    # the most this rank holds of parameters, gradients and optimizer state: at the optimizer step, gradients and
    # all of the state exist at once
    state_peak = 0

    def measure_state(optimizer, args, kwargs):
        nonlocal state_peak
        state_peak = max(state_peak, state_bytes(raw_model, optimizer))
    optimizer.register_step_post_hook(measure_state)
    raw_model = model
    if cfg.compile:
        print0("compiling the model: the first burn-in step takes a while...")
        model = torch.compile(model)
    if runtime.ddp and not fsdp:
        model = DDP(model, device_ids=[runtime.local_rank] if device_type == 'cuda' else None)

    def step():
        loss, _ = train_step(model, optimizer, scaler, loader, cfg.gradient_accumulation_steps, ctx, cfg.grad_clip,
                             cfg.learning_rate)
        return loss

    def sync():
        if device_type == 'cuda':
            torch.cuda.synchronize()
        elif device_type == 'mps':
            torch.mps.synchronize()

    if cfg.profile:
        # useful docs on pytorch profiler:
        # - tutorial https://pytorch.org/tutorials/intermediate/tensorboard_profiler_tutorial.html
        # - api https://pytorch.org/docs/stable/profiler.html#torch.profiler.profile
        wait, warmup, active = 5, 5, 5
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device_type == 'cuda':
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=torch.profiler.tensorboard_trace_handler('./bench_log'),
            record_shapes=False, profile_memory=False, with_stack=False,
        ) as prof:
            for k in range(wait + warmup + active):
                lossf = step().item()
                print0(f"{k}/{wait + warmup + active} loss: {lossf:.4f}")
                prof.step()  # notify the profiler at end of each step
        print0(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))
        return {}

    # simple benchmarking: burn-in (compilation, allocator, autotuning) untimed, then the timed steps
    for k in range(cfg.burnin_steps):
        t0 = time.time()
        step().item()
        print0(f"  burn-in {k + 1}/{cfg.burnin_steps}: {(time.time() - t0) * 1000:.0f} ms", flush=True)
    sync()
    if device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    print0(f"  timing {cfg.benchmark_steps} steps...", flush=True)
    t0 = time.time()
    for _ in range(cfg.benchmark_steps):
        loss = step()
    lossf = loss.item()  # waits for the last step
    sync()
    dt = (time.time() - t0) / cfg.benchmark_steps
    # tokens of all ranks; MFU per GPU, from this rank's share
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * runtime.world_size
    mfu = raw_model.estimate_mfu(cfg.batch_size * cfg.gradient_accumulation_steps, dt,
                                 cfg.peak_flops or device_peak_flops(device))
    # memory per rank over the timed steps, the largest over the ranks: the device's peak (CUDA), the process's
    # peak resident memory (all of it: libraries, activations, buffers; Linux), and the state the optimizer sees
    memory = [torch.cuda.max_memory_allocated(device) if device_type == 'cuda' else -1, rss(), state_peak, base_rss]
    if runtime.ddp:
        memory = torch.tensor(memory, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(memory, op=torch.distributed.ReduceOp.MAX)
        memory = memory.tolist()
    gib = [m / 2**30 if m >= 0 else None for m in memory]
    return dict(loss=lossf, ms=dt * 1000, tokens_per_s=tokens_per_iter / dt, mfu=mfu, peak_memory_gib=gib[0],
                peak_rss_gib=gib[1], state_gib=gib[2], base_rss_gib=gib[3], params=raw_model.get_num_params(),
                ranks=runtime.world_size,
                data_parallel=(cfg.data_parallel if runtime.ddp else 'none'))


def result_line(result: dict) -> str:
    if result.get('oom'):
        return "out of memory"
    mfu = f"{result['mfu'] * 100:.2f}%" if result['mfu'] is not None else "n/a (unknown peak FLOPS: pass --peak_flops)"
    memory = f"{result['peak_memory_gib']:.2f} GiB" if result['peak_memory_gib'] is not None else "n/a"
    rss = f"{result['peak_rss_gib']:.2f} GiB" if result['peak_rss_gib'] is not None else "n/a"
    return (f"loss {result['loss']:.4f}: {result['ms']:.2f} ms/iter, {result['tokens_per_s']:,.0f} tokens/s, "
            f"MFU {mfu}, peak memory {memory}, per rank: params+grads+optimizer {result['state_gib']:.3f} GiB, "
            f"peak RSS {rss}")


# -----------------------------------------------------------------------------
if __name__ == '__main__':
    argv, swept = split_sweep(sys.argv[1:])
    for key in swept:
        if key not in defaults:
            configure(defaults, [f'--{key}={swept[key][0]}'])  # the unknown-key message, closest key named
    base = configure(defaults, argv)
    runtime = setup_runtime(base.device, base.dtype, base.seed)
    given = {arg[2:].partition('=')[0] for arg in sys.argv[1:] if arg.startswith('--')}
    if runtime.device_type == 'cpu' and not given & {*SHAPE_KEYS, 'compile'}:
        # GPT-2 124M compiled on a CPU would print nothing for many minutes
        argv = [*(f'--{k}={v}' for k, v in CPU_SHAPE.items()), '--compile=False', *argv]
        print0(f"note: on a CPU bench.py times a small GPT ({', '.join(f'{k}={v}' for k, v in CPU_SHAPE.items())}), "
               f"uncompiled, unless you give any of {', '.join(SHAPE_KEYS)} or compile")
    if base.real_data and not split_files(dataset_dir(base.dataset), 'train'):
        argv.append('--real_data=False')
        print0(f"note: no prepared data in {dataset_dir(base.dataset)}: timing synthetic tokens (prepare the dataset, "
               f"or pass --real_data=False to silence this)")
    results = []
    for values in itertools.product(*swept.values()):
        setting = dict(zip(swept, values))
        cfg = configure(defaults, argv + [f'--{k}={v}' for k, v in setting.items()], verbose=False)
        if setting:
            print0(f"setting {', '.join(f'{k}={v}' for k, v in setting.items())}:")
        if 'dtype' in setting or 'device' in setting:
            runtime = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
        if not results or 'dtype' in setting or 'device' in setting:
            print0(describe(runtime, cfg))
        tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * runtime.world_size
        ranks = f", {runtime.world_size} ranks, {cfg.data_parallel.upper()}" if runtime.ddp else ""
        print0(f"{cfg.n_layer} layers, {cfg.n_embd} wide, {tokens_per_iter:,} tokens per step, "
               f"{'real' if cfg.real_data else 'synthetic'} data{ranks}")
        try:
            result = bench(cfg, runtime)
        except torch.OutOfMemoryError:
            result = {'oom': True}
            if runtime.device_type == 'cuda':
                torch.cuda.empty_cache()
        if cfg.profile:
            break
        print0(result_line(result), flush=True)
        results.append({**setting, **result})
    if results:
        print0("\n" + " | ".join([*swept, 'ms/iter', 'tokens/s', 'MFU', 'peak memory', 'params+grads+optimizer']))
        for r in results:
            cells = [str(r[k]) for k in swept]
            if r.get('oom'):
                cells += ['out of memory', '', '', '', '']
            else:
                cells += [f"{r['ms']:.2f}", f"{r['tokens_per_s']:,.0f}",
                          f"{r['mfu'] * 100:.2f}%" if r['mfu'] is not None else 'n/a',
                          f"{r['peak_memory_gib']:.2f} GiB" if r['peak_memory_gib'] is not None else 'n/a',
                          f"{r['state_gib']:.3f} GiB"]
            print0(" | ".join(cells))
    if base.json and results and runtime.master_process:
        with open(base.json, 'w') as f:
            jsonlib.dump({'device': describe(runtime, cfg), 'swept': list(swept), 'results': results}, f, indent=2)
        print0(f"wrote {base.json}")
    if runtime.ddp:
        end_distributed()
