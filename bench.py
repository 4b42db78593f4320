"""
Times the training step train.py runs (train.train_step: micro-batches, accumulation, clipping, GradScaler,
fused AdamW) on real data or synthetic tokens, and prints ms/iter, tokens/s, MFU and peak memory.

    python bench.py                                   # GPT-2 124M, batch 12 x 1024, compiled
    python bench.py --batch_size=32 --real_data=False
    python bench.py --device=cpu --compile=False --n_layer=2 --n_embd=128 --block_size=64
    python bench.py --profile=True                    # a torch profiler trace in ./bench_log
"""
import sys
import time

import torch

from common import dataset_dir, device_peak_flops, print0, setup_runtime
from configurator import config_defaults, configure
from data.loader import TokenLoader
from model import GPT, GPTConfig
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
grad_clip = 1.0
learning_rate = 6e-4
weight_decay = 1e-1
burnin_steps = 10  # not timed: compilation, allocator and autotuning warm-up
benchmark_steps = 20
profile = False  # use pytorch profiler, or just simple benchmarking?
peak_flops = None  # the device's peak FLOPS for MFU; None looks the GPU up in common.PEAK_BF16_FLOPS
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


# -----------------------------------------------------------------------------
if __name__ == '__main__':
    globals().update(vars(configure(defaults, sys.argv[1:])))  # overrides from command line or config file
    runtime = setup_runtime(device, dtype, seed)
    device, device_type, dtype, ctx = runtime.device, runtime.device_type, runtime.dtype, runtime.ctx
    model = GPT(GPTConfig(block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=dropout,
                          bias=bias, vocab_size=vocab_size), seed=seed)
    model.to(device)
    if real_data:
        loader = TokenLoader(dataset_dir(dataset), 'train', batch_size, block_size, vocab_size, device, seed)
    else:
        loader = SyntheticLoader(batch_size, block_size, vocab_size, device)
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (0.9, 0.95), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
    raw_model = model
    if compile:
        print0("Compiling model...")
        model = torch.compile(model)  # pytorch 2.0

    def step():
        loss, _ = train_step(model, optimizer, scaler, loader, gradient_accumulation_steps, ctx, grad_clip,
                             learning_rate)
        return loss

    def sync():
        if device_type == 'cuda':
            torch.cuda.synchronize()
        elif device_type == 'mps':
            torch.mps.synchronize()

    tokens_per_iter = batch_size * block_size * gradient_accumulation_steps
    print0(f"{raw_model.get_num_params() / 1e6:.2f}M parameters, {tokens_per_iter:,} tokens per step, "
           f"device {device}, dtype {dtype}, compile {compile}, {'real' if real_data else 'synthetic'} data")

    if profile:
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
    else:
        # simple benchmarking: burn-in (compilation, allocator, autotuning) untimed, then the timed steps
        for _ in range(burnin_steps):
            step()
        sync()
        if device_type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.time()
        for _ in range(benchmark_steps):
            loss = step()
        lossf = loss.item()  # waits for the last step
        sync()
        dt = (time.time() - t0) / benchmark_steps
        mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt,
                                     peak_flops or device_peak_flops(device))
        mfu_text = f"{mfu * 100:.2f}%" if mfu is not None else "n/a (unknown peak FLOPS: pass --peak_flops)"
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device_type == 'cuda' else "n/a"
        print0(f"loss {lossf:.4f}: {dt * 1000:.2f} ms/iter, {tokens_per_iter / dt:,.0f} tokens/s, MFU {mfu_text}, "
               f"peak memory {memory}")
