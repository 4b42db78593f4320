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
