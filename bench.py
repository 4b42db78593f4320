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

from common import dataset_dir, print0, setup_runtime
from configurator import config_defaults, configure
from data.tokenfiles import TokenLoader
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
peak_flops = None  # the device's peak FLOPS for MFU; None looks the GPU up in model.PEAK_BF16_FLOPS
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


def main(argv: list[str]):
    cfg = configure(defaults, argv)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model = GPT(GPTConfig(block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                          dropout=cfg.dropout, bias=cfg.bias, vocab_size=cfg.vocab_size), seed=cfg.seed)
    model.to(rt.device)
    if cfg.real_data:
        loader = TokenLoader(dataset_dir(cfg.dataset), 'train', cfg.batch_size, cfg.block_size, cfg.vocab_size,
                             rt.device, cfg.seed)
    else:
        loader = SyntheticLoader(cfg.batch_size, cfg.block_size, cfg.vocab_size, rt.device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (0.9, 0.95), rt.device_type)
    scaler = torch.amp.GradScaler(rt.device_type, enabled=(rt.dtype == 'float16'))
    raw_model = model
    if cfg.compile:
        print0("Compiling model...")
        model = torch.compile(model)  # pytorch 2.0

    def step():
        return train_step(model, optimizer, scaler, loader, cfg.gradient_accumulation_steps, rt.ctx,
                          cfg.grad_clip, cfg.learning_rate)

    def sync():
        if rt.device_type == 'cuda':
            torch.cuda.synchronize()
        elif rt.device_type == 'mps':
            torch.mps.synchronize()

    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    print0(f"{raw_model.get_num_params() / 1e6:.2f}M parameters, {tokens_per_iter:,} tokens per step, "
           f"device {rt.device}, dtype {rt.dtype}, compile {cfg.compile}, "
           f"{'real' if cfg.real_data else 'synthetic'} data")

    if cfg.profile:
        # useful docs on pytorch profiler:
        # - tutorial https://pytorch.org/tutorials/intermediate/tensorboard_profiler_tutorial.html
        # - api https://pytorch.org/docs/stable/profiler.html#torch.profiler.profile
        wait, warmup, active = 5, 5, 5
        activities = [torch.profiler.ProfilerActivity.CPU]
        if rt.device_type == 'cuda':
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
        return

    for _ in range(cfg.burnin_steps):
        step()
    sync()
    if rt.device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats(rt.device)
    t0 = time.time()
    for _ in range(cfg.benchmark_steps):
        loss = step()
    lossf = loss.item()  # waits for the last step
    sync()
    dt = (time.time() - t0) / cfg.benchmark_steps
    mfu = raw_model.estimate_mfu(cfg.batch_size * cfg.gradient_accumulation_steps, dt, cfg.peak_flops)
    mfu_text = f"{mfu * 100:.2f}%" if mfu is not None else "n/a (unknown peak FLOPS: pass --peak_flops)"
    memory = f"{torch.cuda.max_memory_allocated(rt.device) / 2**30:.2f} GiB" if rt.device_type == 'cuda' else "n/a"
    print0(f"loss {lossf:.4f}: {dt * 1000:.2f} ms/iter, {tokens_per_iter / dt:,.0f} tokens/s, MFU {mfu_text}, "
           f"peak memory {memory}")


if __name__ == '__main__':
    main(sys.argv[1:])
