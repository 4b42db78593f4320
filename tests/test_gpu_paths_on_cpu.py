"""
What a GPU run adds, exercised on the CPU: torch.compile (inductor emits C++ here), alone and inside DDP, and mixed
precision (bfloat16 autocast; float16 with the GradScaler).
"""

import pytest
import torch

from conftest import TINY, eval_losses, iter_losses, load_model_state, run_ranks, train

COMPILED = ['--compile=True', '--eval_interval=2', '--max_iters=4', '--lr_decay_iters=4', '--dropout=0.0']


@pytest.mark.slow
def test_compiled_training_matches_eager_and_resumes(char_data, tmp_path):
    train(char_data, tmp_path / 'eager', *COMPILED[1:], '--compile=False')
    compiled = train(char_data, tmp_path / 'compiled', *COMPILED)
    assert 'compiling the model' in compiled.stdout
    a, b = iter_losses(tmp_path / 'eager'), iter_losses(tmp_path / 'compiled')
    assert sorted(b) == [1, 2, 3, 4] and all(abs(a[i] - b[i]) < 1e-4 for i in a), (a, b)
    ckpt = load_model_state(tmp_path / 'compiled')
    assert not any(k.startswith('_orig_mod.') for k in ckpt['model'])  # nanoGPT's keys: the uncompiled module's
    eager_ckpt = load_model_state(tmp_path / 'eager')
    assert set(ckpt['model']) == set(eager_ckpt['model'])
    for k, v in eager_ckpt['model'].items():
        assert torch.allclose(v, ckpt['model'][k], atol=1e-4), k
    train(char_data, tmp_path / 'compiled', '--compile=True', '--eval_interval=2', '--max_iters=6',
          '--lr_decay_iters=4', '--warmup_iters=4', '--init_from=resume')  # (warmup past the decay is refused)
    assert sorted(iter_losses(tmp_path / 'compiled')) == [5, 6] and load_model_state(tmp_path / 'compiled')['iter_num'] == 6


@pytest.mark.slow
def test_compiled_model_inside_ddp(char_data, tmp_path):
    train(char_data, tmp_path / 'single', *COMPILED[1:], '--compile=False', '--gradient_accumulation_steps=2')
    run_ranks('train.py', *TINY, f'--dataset={char_data}', f'--out_dir={tmp_path / "ddp"}', *COMPILED,
              '--gradient_accumulation_steps=2', timeout=900)
    a, b = eval_losses(tmp_path / 'single'), eval_losses(tmp_path / 'ddp')
    assert sorted(b) == [0, 2, 4] and all(abs(a[i] - b[i]) < 1e-3 for i in a), (a, b)
    assert not any(k.startswith(('_orig_mod.', 'module.')) for k in load_model_state(tmp_path / 'ddp')['model'])


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_mixed_precision_trains(char_data, tmp_path, dtype):
    proc = train(char_data, tmp_path, f'--dtype={dtype}', '--max_iters=30', '--eval_interval=30',
                 '--lr_decay_iters=30')
    assert f'dtype {dtype}' in proc.stdout
    val = eval_losses(tmp_path)
    assert val[30] < val[0] - 0.3, val
    scaler = load_model_state(tmp_path)['scaler']
    if dtype == 'float16':  # the GradScaler ran: its state is saved, with the scale it settled on
        assert scaler and scaler['scale'] > 0
    else:
        assert not scaler  # a disabled scaler saves nothing
