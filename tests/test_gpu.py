"""GPU-only checks: skipped on machines without CUDA (CI has none)."""
import re

import pytest
import torch
from conftest import run_script

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

SMALL = ['--device=cuda', '--n_layer=2', '--n_head=2', '--n_embd=64', '--block_size=64', '--batch_size=4',
         '--burnin_steps=2', '--benchmark_steps=3', '--real_data=False']


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_bench_on_gpu(dtype):
    proc = run_script('bench.py', *SMALL, f'--dtype={dtype}', '--compile=False')
    assert f'dtype {dtype}' in proc.stdout
    assert re.search(r'ms/iter, [\d,]+ tokens/s, MFU .*, peak memory [\d.]+ GiB', proc.stdout), proc.stdout


def test_kv_cache_matches_uncached_on_gpu():
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(block_size=32, vocab_size=97, n_layer=2, n_head=4, n_embd=32)).cuda().eval()
    prompt = torch.randint(0, 97, (2, 5), device='cuda')
    assert torch.equal(model.generate(prompt, 40, temperature=0.0),
                       model.generate(prompt, 40, temperature=0.0, use_kv_cache=False))


def tiny_gpu_model(**kwargs):
    from model import GPT, GPTConfig
    config = dict(block_size=64, vocab_size=128, n_layer=2, n_head=4, n_embd=64, dropout=0.0)
    return GPT(GPTConfig(**{**config, **kwargs})).cuda()


def test_compiled_bf16_step_matches_eager():
    from train import train_step

    class Fixed:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def next_batch(self):
            return self.x, self.y
    x, y = torch.randint(128, (4, 64), device='cuda'), torch.randint(128, (4, 64), device='cuda')
    losses = []
    for compiled in (False, True):
        model = tiny_gpu_model()
        optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cuda')
        assert optimizer.defaults['fused']  # the fused AdamW kernel on CUDA
        scaler = torch.amp.GradScaler('cuda', enabled=False)
        step_model = torch.compile(model) if compiled else model
        ctx = torch.autocast('cuda', dtype=torch.bfloat16)
        losses.append([train_step(step_model, optimizer, scaler, Fixed(x, y), 2, ctx, 1.0, 1e-3)[0].item()
                       for _ in range(3)])
    assert all(abs(a - b) < 2e-2 for a, b in zip(*losses)), losses


def test_flash_attention_matches_the_explicit_softmax():
    model = tiny_gpu_model().eval()
    idx = torch.randint(128, (2, 64), device='cuda')
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        _, flash = model(idx, idx)
        for block in model.transformer.h:
            block.attn.flash = False
        _, explicit = model(idx, idx)
    assert abs(flash.item() - explicit.item()) < 1e-2


def test_loader_pins_and_moves_batches(char_data):
    from nanogpt.loader import TokenLoader
    loader = TokenLoader(char_data, 'train', 4, 16, 16, 'cuda')
    x, y = loader.next_batch()
    assert x.is_cuda and y.is_cuda and torch.equal(x[:, 1:], y[:, :-1])


def test_estimate_mfu_uses_this_gpus_peak():
    from nanogpt.runtime import device_peak_flops
    model = tiny_gpu_model()
    peak = device_peak_flops('cuda')
    if peak is None:
        pytest.skip(f"{torch.cuda.get_device_name()} is not in nanogpt.runtime.PEAK_BF16_FLOPS")
    assert model.estimate_mfu(4, 0.1, peak) == pytest.approx(model.estimate_mfu(4, 0.1, 1.0) / peak)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_fsdp_on_one_gpu_trains_and_saves_a_whole_checkpoint(char_data, tmp_path, dtype):
    # the CUDA paths the CPU tests cannot take: NCCL, fused AdamW on sharded (DTensor) parameters, the
    # mixed-precision policy in bfloat16/float16 on the GPU, compiled
    import subprocess
    import sys

    from conftest import REPO, TINY, eval_losses
    args = [a for a in TINY if a not in ('--device=cpu', '--compile=False')]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1', 'train.py', *args,
           '--device=cuda', f'--dtype={dtype}', '--compile=True', '--data_parallel=fsdp', f'--dataset={char_data}',
           f'--out_dir={tmp_path}', '--max_iters=40', '--eval_interval=20', '--lr_decay_iters=40']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    val = eval_losses(tmp_path)
    assert val[40] < val[0] - 0.5, val
    ckpt = torch.load(tmp_path / 'ckpt.pt', map_location='cpu', weights_only=True)
    assert all(v.dtype == torch.float32 and v.device.type == 'cpu' for v in ckpt['model'].values())
    run_script('sample.py', f'--out_dir={tmp_path}', '--num_samples=1', '--max_new_tokens=10', '--device=cuda')


@pytest.fixture(scope='module')
def gpt2_limit():
    """Memory (bytes) in which GPT-2 124M at 12 x 1024 tokens (bfloat16, uncompiled: train.py's and bench.py's
    defaults) cannot take nanogpt/fit.py's probe but 6 x 1024 can, measured on this GPU, so the tests below depend on no
    estimate: halfway between what the caching allocator reserved at 6 rows and what was allocated at 12 (a limited
    allocator frees its cache and retries before it gives up, so 12 rows need little more than that)."""
    from model import GPT, GPTConfig
    from nanogpt.fit import _try_step

    def peaks(batch_size):
        model = GPT(GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0,
                              bias=False)).cuda()
        optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cuda')
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        ctx = torch.autocast('cuda', dtype=torch.bfloat16)
        assert _try_step(model, batch_size, 1024, 'cuda', ctx, optimizer, True) == 'ok'
        del model, optimizer
        torch.cuda.empty_cache()
        return torch.cuda.max_memory_reserved(), torch.cuda.max_memory_allocated()

    six, twelve = peaks(6)[0], peaks(12)[1]
    assert twelve > six * 1.2, (six, twelve)  # activations dominate: the two sizes are told apart
    return (six + twelve) // 2


def gpu_limited(limit: int, script: str, *args):
    """script run with torch.cuda.set_per_process_memory_fraction leaving it limit bytes of this GPU."""
    import os
    import subprocess
    import sys

    from conftest import REPO
    fraction = limit / torch.cuda.get_device_properties(0).total_memory
    code = (f"import runpy, sys, torch; torch.cuda.set_per_process_memory_fraction({fraction}); "
            f"sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, '-c', code, os.path.join(REPO, script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_a_gpu_too_small_for_gpt2_at_batch_12_trains_as_accumulated_smaller_batches(gpt2_limit, tmp_path):
    from conftest import bpe_data, iter_losses, load_model_state
    bpe_data(tmp_path / 'data')
    args = ['--device=cuda', '--dtype=bfloat16', '--compile=False', f'--dataset={tmp_path / "data"}',
            '--gradient_accumulation_steps=1', '--max_iters=2', '--eval_interval=2', '--eval_iters=1',
            '--log_interval=1', '--wandb_log=False']
    proc = gpu_limited(gpt2_limit, 'train.py', *args, '--batch_size=12', f'--out_dir={tmp_path / "fitted"}')
    note = re.search(r'note: batch_size=12 does not fit in the memory of cuda \(([\d.]+) GiB\): training with '
                     r'batch_size=(\d+) and gradient_accumulation_steps=(\d+), the same 12,288 tokens per iteration',
                     proc.stdout)
    assert note, proc.stdout[-3000:]
    assert float(note.group(1)) == pytest.approx(gpt2_limit / 2**30, abs=0.1)  # what the process may use
    fitted, steps = int(note.group(2)), int(note.group(3))
    assert fitted * steps == 12 and fitted < 12
    config = load_model_state(tmp_path / 'fitted')['config']
    assert (config['batch_size'], config['gradient_accumulation_steps']) == (fitted, steps)
    # the run that starting at the chosen sizes gives (the GPU's kernels may sum in another order: within 1e-3)
    run_script('train.py', *args, f'--batch_size={fitted}', f'--gradient_accumulation_steps={steps}',
               f'--out_dir={tmp_path / "direct"}')
    fitted_losses, direct_losses = iter_losses(tmp_path / 'fitted'), iter_losses(tmp_path / 'direct')
    assert fitted_losses.keys() == direct_losses.keys() and len(fitted_losses) >= 2
    assert all(fitted_losses[k] == pytest.approx(direct_losses[k], rel=1e-3) for k in fitted_losses)


def test_a_gpu_too_small_for_gpt2_at_batch_12_fits_the_bench_micro_batch(gpt2_limit):
    proc = gpu_limited(gpt2_limit, 'bench.py', '--device=cuda', '--dtype=bfloat16', '--compile=False',
                       '--real_data=False', '--batch_size=12', '--burnin_steps=1', '--benchmark_steps=2')
    fitted = re.search(r'batch_size=12 does not fit: timing batch_size=(\d+) x (\d+) accumulation steps', proc.stdout)
    assert fitted and int(fitted.group(1)) * int(fitted.group(2)) == 12, proc.stdout[-3000:]
    assert '(timed as batch_size=' in proc.stdout


def test_a_compiled_bench_on_gpu_stays_compiled():
    proc = run_script('bench.py', *SMALL, '--dtype=bfloat16', '--compile=True')
    assert 'compile True' in proc.stdout and 'torch.compile does not work here' not in proc.stdout
    assert 'timed uncompiled' not in proc.stdout and 'fitting probe:' in proc.stdout
