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
    from data.loader import TokenLoader
    loader = TokenLoader(char_data, 'train', 4, 16, 16, 'cuda')
    x, y = loader.next_batch()
    assert x.is_cuda and y.is_cuda and torch.equal(x[:, 1:], y[:, :-1])


def test_estimate_mfu_uses_this_gpus_peak():
    from common import device_peak_flops
    model = tiny_gpu_model()
    peak = device_peak_flops('cuda')
    if peak is None:
        pytest.skip(f"{torch.cuda.get_device_name()} is not in common.PEAK_BF16_FLOPS")
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


def test_a_gpu_too_small_for_gpt2_at_batch_12_fits_the_micro_batch():
    # this GPU made an 8 GiB one: GPT-2 124M at 12 x 1024 (bfloat16, uncompiled) needs more; a divisor of 12 fits
    import os
    import subprocess
    import sys
    from conftest import REPO
    fraction = 8 * 2**30 / torch.cuda.get_device_properties(0).total_memory
    code = (f"import runpy, sys, torch; torch.cuda.set_per_process_memory_fraction({fraction}); "
            f"sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, '-c', code, os.path.join(REPO, 'bench.py'), '--device=cuda',
                           '--dtype=bfloat16', '--compile=False', '--real_data=False', '--batch_size=12',
                           '--burnin_steps=1', '--benchmark_steps=2'], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fitted = re.search(r'batch_size=12 does not fit: timing batch_size=(\d+) x (\d+) accumulation steps', proc.stdout)
    assert fitted and int(fitted.group(1)) * int(fitted.group(2)) == 12, proc.stdout[-3000:]
    assert '(timed as batch_size=' in proc.stdout


def test_a_compiled_bench_on_gpu_stays_compiled():
    proc = run_script('bench.py', *SMALL, '--dtype=bfloat16', '--compile=True')
    assert 'compile True' in proc.stdout and 'torch.compile does not work here' not in proc.stdout
    assert 'timed uncompiled' not in proc.stdout and 'fitting probe:' in proc.stdout
