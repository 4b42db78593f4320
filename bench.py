"""
Times the very step train.py runs (train_step: micro-batches, accumulation, clipping, GradScaler, AdamW or Muon) on
a model placed and wrapped as train.py's, and prints ms/iter, tokens/s, MFU and peak memory: the one command to
check a GPU.

    python bench.py                                   # GPT-2 124M, batch 12 x 1024, compiled (a small GPT on a CPU)
    python bench.py --batch_size=8,16,32,64           # a sweep: one line per value, then a table
    python bench.py --optimizer=adamw,muon --dtype=bfloat16,float16 --json=bench.json   # every combination, saved
    python bench.py --profile=True                    # a torch profiler trace in ./bench_log
    torchrun --standalone --nproc_per_node=8 bench.py --data_parallel=fsdp   # the DDP or FSDP step on 8 GPUs

A key given as a comma-separated list is swept (nanogpt/sweep.py); a batch_size that does not fit is timed as
smaller micro-batches, accumulated, as train.py trains it. Without prepared data it times synthetic tokens.
"""
import functools
import sys
import time

import torch

from configurator import config_defaults, configure
from model import GPT, GPTConfig
from nanogpt import sweep
from nanogpt.errors import one_line_errors
from nanogpt.files import make_folder
from nanogpt.fit import check_model_size, fit_step, free_memory
from nanogpt.loader import SyntheticLoader, TokenLoader
from nanogpt.optim import OPTIMIZERS
from nanogpt.parallel import DATA_PARALLEL, place_model, wrap_model
from nanogpt.runtime import (check_needs, describe_device, device_peak_flops, device_type_of, end_distributed, print0,
                             setup_runtime)
from nanogpt.tokenfiles import Dataset, dataset_dir, read_vocab, split_files
from train import train_step

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
optimizer = 'adamw'  # or 'muon', as train.py's (--optimizer=adamw,muon times both)
learning_rate = 6e-4
weight_decay = 1e-1
burnin_steps = 10  # not timed: compilation, allocator and autotuning warm-up
benchmark_steps = 20
profile = False  # use pytorch profiler, or just simple benchmarking?
peak_flops = None  # the device's peak FLOPS for MFU; None looks the GPU up in nanogpt.runtime.PEAK_BF16_FLOPS
json = ''  # also write the results to this file, for later comparison
fit_batch_size = True  # a batch_size that does not fit in memory is timed as smaller micro-batches, as train.py's
# -----------------------------------------------------------------------------
RANGES = dict(batch_size='> 0', block_size='> 0', gradient_accumulation_steps='> 0', n_layer='> 0', n_head='> 0',
              n_embd='> 0', dropout='[0, 1)', vocab_size='> 0', data_parallel=DATA_PARALLEL, grad_clip='>= 0',
              optimizer=OPTIMIZERS, learning_rate='>= 0', weight_decay='>= 0', burnin_steps='>= 0',
              benchmark_steps='> 0', peak_flops='> 0 or None', dtype=('auto', 'float32', 'bfloat16', 'float16'))
defaults = config_defaults(globals())
SWEEPABLE = {k for k, v in defaults.items() if type(v) in (int, float, bool)} | {'dtype', 'device', 'optimizer',
                                                                                 'data_parallel'}

CPU_SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=8)  # a CPU times it in under a minute


@functools.cache
def open_dataset(folder: str) -> Dataset:
    return Dataset(folder, splits=('train',), note=print0)  # opened (and checked, with its notes) once per sweep


def bench(cfg, runtime, probe=None) -> dict:
    """Build the model, loader and optimizer of one setting, placed and wrapped as train.py does (DDP or FSDP under
    torchrun), and time train_step on it. A probe (benchmarks/fsdp_memory.py's) measures more memory than the CUDA
    peak: probe.watch(model, optimizer, cfg) once they exist, probe.read() -> {name: bytes} after the timed steps."""
    check_needs(vars(cfg))  # what chunked_loss and Muon need of torch
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * runtime.world_size
    ranks = f", {runtime.world_size} ranks, {cfg.data_parallel.upper()}" if runtime.ddp else ""
    print0(f"{cfg.n_layer} layers, {cfg.n_embd} wide, {tokens_per_iter:,} tokens per step, "
           f"{'real' if cfg.real_data else 'synthetic'} data{ranks}, vocab_size {cfg.vocab_size}")
    check_model_size(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size)
    model = GPT(GPTConfig(block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                          dropout=cfg.dropout, bias=cfg.bias, vocab_size=cfg.vocab_size), seed=cfg.seed)
    model.chunked_loss = cfg.chunked_loss
    ctx = place_model(model, runtime, cfg.data_parallel)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (0.9, 0.95), runtime.device_type,
                                           cfg.optimizer)
    scaler = torch.amp.GradScaler(runtime.device_type, enabled=(runtime.dtype == 'float16'))
    if probe:
        probe.watch(model, optimizer, cfg)
    if cfg.compile:  # each setting of a sweep compiled afresh: the last one's graphs would make this one's dynamic
        torch._dynamo.reset()
    raw_model = model
    t0 = time.time()  # as train.py: a micro-batch that does not fit runs as accumulated smaller ones
    model, fitted, compiled = fit_step(lambda compile: wrap_model(raw_model, runtime, cfg.data_parallel, compile),
                                       runtime, cfg.batch_size, cfg.block_size, ctx, optimizer, cfg.fit_batch_size,
                                       cfg.compile, runtime.ddp and cfg.data_parallel == 'fsdp')
    probe_ms = (time.time() - t0) * 1000  # what train.py spends before its first step (compiling, when compiled)
    print0(f"  fitting probe: {probe_ms:.0f} ms")
    accumulation = cfg.gradient_accumulation_steps * cfg.batch_size // fitted
    if fitted != cfg.batch_size:
        print0(f"  batch_size={cfg.batch_size} does not fit: timing batch_size={fitted} x {accumulation} "
               f"accumulation steps, the same tokens per step")
    if cfg.real_data:
        loader = TokenLoader(open_dataset(dataset_dir(cfg.dataset)), 'train', fitted, cfg.block_size, cfg.vocab_size,
                             runtime.device, cfg.seed, runtime.rank, runtime.world_size)
    else:
        loader = SyntheticLoader(fitted, cfg.block_size, cfg.vocab_size, runtime.device)

    def step():
        return train_step(model, optimizer, scaler, loader, accumulation, ctx, cfg.grad_clip, cfg.learning_rate)[0]

    if cfg.profile:
        make_folder('bench_log', 'bench_log', fix="move it away, or run bench.py from another folder (--profile=True "
                                              "writes its traces in ./bench_log)")  # refused before the steps
        # useful docs on pytorch profiler: https://pytorch.org/docs/stable/profiler.html#torch.profiler.profile
        with torch.profiler.profile(schedule=torch.profiler.schedule(wait=5, warmup=5, active=5),  # CPU, and CUDA
                                    on_trace_ready=torch.profiler.tensorboard_trace_handler('./bench_log')) as prof:
            for k in range(15):
                print0(f"{k}/15 loss: {step().item():.4f}")
                prof.step()  # notify the profiler at end of each step
        print0(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))
        return {}

    # simple benchmarking: burn-in (compilation, allocator, autotuning) untimed, then the timed steps
    for k in range(cfg.burnin_steps):
        t0 = time.time()
        step().item()
        print0(f"  burn-in {k + 1}/{cfg.burnin_steps}: {(time.time() - t0) * 1000:.0f} ms", flush=True)
    if runtime.device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats(runtime.device)
    print0(f"  timing {cfg.benchmark_steps} steps...", flush=True)
    t0 = time.time()
    for _ in range(cfg.benchmark_steps):
        loss = step()
    lossf = loss.item()  # waits for the last step
    dt = (time.time() - t0) / cfg.benchmark_steps
    # MFU per GPU, from this rank's share; memory per rank, the largest over the ranks
    mfu = raw_model.estimate_mfu(fitted * accumulation, dt, cfg.peak_flops or device_peak_flops(runtime.device))
    cuda_peak = torch.cuda.max_memory_allocated(runtime.device) if runtime.device_type == 'cuda' else -1
    measured = {'peak_memory': cuda_peak, **(probe.read() if probe else {})}
    if runtime.ddp:
        largest = torch.tensor(list(measured.values()), dtype=torch.float64, device=runtime.device)
        torch.distributed.all_reduce(largest, op=torch.distributed.ReduceOp.MAX)
        measured = dict(zip(measured, largest.tolist()))
    return dict(loss=lossf, ms=dt * 1000, tokens_per_s=tokens_per_iter / dt, mfu=mfu,
                **{f'{k}_gib': v / 2**30 if v >= 0 else None for k, v in measured.items()},
                params=raw_model.get_num_params(), ranks=runtime.world_size, fitted_batch_size=fitted,
                compiled=compiled, probe_ms=probe_ms, data_parallel=cfg.data_parallel if runtime.ddp else 'none')


# -----------------------------------------------------------------------------
if __name__ == '__main__':
    one_line_errors(defaults)
    argv, swept = sweep.split_sweep(sys.argv[1:], SWEEPABLE)
    # the keys every setting shares, with the first of each swept one (n_head=12 would not divide --n_embd=32 of
    # a sweep --n_head=2,4); each setting is checked in full below
    base = configure(defaults, argv + [f'--{k}={v[0]}' for k, v in swept.items()], RANGES,
                     verbose=False if swept else None)
    runtime = setup_runtime(base.device, base.dtype, base.seed)
    given = {arg[2:].partition('=')[0] for arg in sys.argv[1:] if arg.startswith('--')}
    small = {k: v for k, v in {**CPU_SHAPE, 'compile': False}.items() if k not in given}
    if runtime.device_type == 'cpu' and small:
        # GPT-2 124M compiled on a CPU would print nothing for many minutes: the keys not given take a small GPT's
        argv = [*(f'--{k}={v}' for k, v in small.items()), *argv]
        print0(f"note: on a CPU bench.py times a small GPT: {', '.join(f'{k}={v}' for k, v in small.items())} "
               f"(give a key to set it yourself)")
    folder = dataset_dir(base.dataset)
    if base.real_data and not split_files(folder, 'train'):
        argv.append('--real_data=False')
        print0(f"note: no prepared data in {folder}: timing synthetic tokens (prepare the dataset, or pass "
               f"--real_data=False to silence this)")
    elif base.real_data and 'vocab_size' not in given and (vocab := read_vocab(folder)):
        argv.append(f'--vocab_size={len(vocab)}')  # the model train.py trains on that dataset
        print0(f"note: {folder} has a vocabulary of {len(vocab)} characters: timing vocab_size={len(vocab)}, as "
               f"train.py trains on it")
    def configured(args: list[str]):  # a setting's config, its device checked too: a bad one costs no results
        cfg = configure(defaults, argv + args, RANGES, verbose=False)
        if cfg.device != 'auto':
            device_type_of(cfg.device)
        return cfg
    settings = sweep.settings(swept, base.json, configured)
    results, described = [], ''
    for setting, cfg in settings:
        if setting:
            print0(f"setting {', '.join(f'{k}={v}' for k, v in setting.items())}:")
        if 'dtype' in setting or 'device' in setting:
            runtime = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
        line, described = described, describe_device(runtime, cfg.compile, cfg.chunked_loss)
        if described != line:  # printed once, and again when a swept key changes it
            print0(described)
        try:
            result = bench(cfg, runtime)
        except (Exception, SystemExit) as e:
            result = sweep.failed(e, swept)  # reported in its row, while the other settings still run
        free_memory(runtime.device)  # what a failed setting held, free again for the next
        if cfg.profile:
            break
        print0(sweep.result_line(result, cfg.batch_size, cfg.compile), flush=True)
        results.append({**setting, **result})
        if base.json and runtime.master_process:  # saved as it is measured, after the rows already there
            sweep.add_result(base.json, described, swept, {**results[-1], 'command': ' '.join(sys.argv[1:])})
    if results:
        print0("\n" + sweep.table(results, swept))
    if base.json and results:
        print0(f"wrote {len(results)} row(s) to {base.json}")
    if runtime.ddp:
        end_distributed()
