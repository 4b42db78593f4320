"""FSDP2 (data_parallel='fsdp') against DDP, on the CPU with gloo ranks started as torchrun starts them: the same
training, one whole nanoGPT-format checkpoint, exact resumes, and resumes across the two wrappers and rank counts."""
import os
import shutil

import pytest
import torch

from conftest import (after_meta, ddp_train, eval_losses, load_init_weights, load_model_state, read_log,
                      run_ranks, run_script, train)

# 4 micro-steps (2 per rank) so that the gradient sync is held back on the first; a clip that binds
ARGS = ['--eval_interval=3', '--gradient_accumulation_steps=4', '--eval_iters=4', '--grad_clip=0.1', '--dropout=0.0',
        '--lr_decay_iters=6']


def step_records(out_dir) -> dict:
    return {r['iter']: r for r in read_log(out_dir) if 'loss' in r}


def assert_same_training(a, b, atol=1e-6):
    """Two checkpoints of the same training: same keys, weights and AdamW state within float32 rounding."""
    assert a['iter_num'] == b['iter_num'] and list(a['model']) == list(b['model'])
    for k, v in a['model'].items():
        assert torch.allclose(v, b['model'][k], atol=atol, rtol=1e-5), (k, (v - b['model'][k]).abs().max())
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']
    for i, state in a['optimizer']['state'].items():
        for k, v in state.items():
            assert torch.allclose(v, b['optimizer']['state'][i][k], atol=atol, rtol=1e-4), (i, k)


@pytest.fixture(scope='module')
def runs(char_data, tmp_path_factory):
    """DDP and FSDP trainings of 6 iterations on 2 ranks, and an FSDP one cut at 3 and resumed to 6."""
    root = tmp_path_factory.mktemp('fsdp')
    procs = {
        'ddp': ddp_train(char_data, root / 'ddp', '--max_iters=6', *ARGS),
        # under torchrun itself once: what the forked ranks stand in for elsewhere
        'fsdp': ddp_train(char_data, root / 'fsdp', '--max_iters=6', '--data_parallel=fsdp', *ARGS, fresh=True),
        'cut': ddp_train(char_data, root / 'cut', '--max_iters=3', '--data_parallel=fsdp', *ARGS),
    }
    shutil.copytree(root / 'cut', root / 'fsdp3')  # the checkpoint at 3, for the resumes under DDP
    procs['resumed'] = ddp_train(char_data, root / 'cut', '--max_iters=6', '--data_parallel=fsdp',
                                 '--init_from=resume', *ARGS)
    return root, procs


@pytest.mark.slow
def test_fsdp_trains_like_ddp(runs, char_data):
    root, procs = runs
    a, b = eval_losses(root / 'ddp'), eval_losses(root / 'fsdp')
    assert sorted(a) == sorted(b) == [0, 3, 6]
    assert all(abs(a[i] - b[i]) <= 1e-4 for i in a), (a, b)
    ddp, fsdp = load_model_state(root / 'ddp'), load_model_state(root / 'fsdp')
    assert_same_training(ddp, fsdp)
    assert not torch.equal(fsdp['model']['lm_head.weight'], load_init_weights(char_data)), 'nothing trained'
    # the gradient norm over all shards is the norm DDP sees, and the clip bound it
    norms_ddp = [r['grad_norm'] for r in step_records(root / 'ddp').values()]
    norms_fsdp = [r['grad_norm'] for r in step_records(root / 'fsdp').values()]
    assert len(norms_fsdp) == 6 and norms_fsdp == pytest.approx(norms_ddp, rel=1e-4)
    assert min(norms_fsdp) > 0.1


@pytest.mark.slow
def test_fsdp_checkpoint_is_one_whole_checkpoint(runs):
    root, _ = runs
    ckpt, ddp = load_model_state(root / 'fsdp'), load_model_state(root / 'ddp')
    assert set(ckpt) == set(ddp) and ckpt['config']['data_parallel'] == 'fsdp'
    # whole tensors under nanoGPT's keys, not shards: every state tensor has its parameter's full shape
    for k, v in ckpt['model'].items():
        assert type(v) is torch.Tensor and v.shape == ddp['model'][k].shape, k
    assert all(v.shape == ddp['optimizer']['state'][i][k].shape
               for i, state in ckpt['optimizer']['state'].items() for k, v in state.items())
    # the tied weight was sharded and gathered as one parameter: one tensor under both names
    wte, lm_head = ckpt['model']['transformer.wte.weight'], ckpt['model']['lm_head.weight']
    assert wte.data_ptr() == lm_head.data_ptr()
    assert len(ckpt['optimizer']['state']) == len(ddp['optimizer']['state'])
    proc = run_script('sample.py', f'--out_dir={root / "fsdp"}', '--start=to', '--num_samples=1',
                      '--max_new_tokens=20', '--device=cpu')
    assert after_meta(proc.stdout).startswith('to') and len(after_meta(proc.stdout)) >= 22


@pytest.mark.slow
def test_fsdp_resume_is_exact(runs):
    root, _ = runs
    whole, resumed = load_model_state(root / 'fsdp'), load_model_state(root / 'cut')
    assert resumed['iter_num'] == 6
    for k, v in whole['model'].items():
        assert torch.equal(v, resumed['model'][k]), k
    for i, state in whole['optimizer']['state'].items():
        assert all(torch.equal(v, resumed['optimizer']['state'][i][k]) for k, v in state.items()), i
    assert eval_losses(root / 'cut')[6] == eval_losses(root / 'fsdp')[6]


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_under_ddp_and_one_process(runs, char_data, tmp_path):
    root, _ = runs
    ddp = load_model_state(root / 'ddp')
    shutil.copytree(root / 'fsdp3', tmp_path / 'ddp')
    ddp_train(char_data, tmp_path / 'ddp', '--max_iters=6', '--init_from=resume', *ARGS)
    assert_same_training(ddp, load_model_state(tmp_path / 'ddp'))
    shutil.copytree(root / 'fsdp3', tmp_path / 'single')
    train(char_data, tmp_path / 'single', '--max_iters=6', '--init_from=resume', *ARGS)
    assert_same_training(ddp, load_model_state(tmp_path / 'single'))


@pytest.mark.slow
def test_ddp_checkpoint_resumes_under_fsdp_on_more_ranks(runs, char_data, tmp_path):
    root, _ = runs
    ddp_train(char_data, tmp_path, '--max_iters=3', *ARGS)
    ddp_train(char_data, tmp_path, '--max_iters=6', '--init_from=resume', '--data_parallel=fsdp', *ARGS, nproc=4)
    resumed = load_model_state(tmp_path)
    assert resumed['world_size'] == 4 and resumed['config']['data_parallel'] == 'fsdp'
    assert_same_training(load_model_state(root / 'fsdp'), resumed)
    assert eval_losses(tmp_path)[6] == pytest.approx(eval_losses(root / 'fsdp')[6], abs=1e-4)


@pytest.mark.slow
def test_fsdp_bfloat16_compiled(runs, char_data, tmp_path):
    # bfloat16 weights for compute under the mixed-precision policy, float32 master weights, torch.compile
    ddp_train(char_data, tmp_path, '--max_iters=3', '--data_parallel=fsdp', '--dtype=bfloat16', '--compile=True', *ARGS)
    root, _ = runs
    a, b = eval_losses(root / 'ddp'), eval_losses(tmp_path)
    assert abs(a[3] - b[3]) < 0.02 and b[3] < b[0] - 0.05, (a, b)
    ckpt = load_model_state(tmp_path)
    assert all(v.dtype == torch.float32 for v in ckpt['model'].values())
    fsdp3 = load_model_state(root / 'fsdp3')
    diff = max((v - fsdp3['model'][k]).abs().max().item() for k, v in ckpt['model'].items())
    assert 0 < diff < 5e-3, diff  # bfloat16 compute: near the float32 training, not equal to it


def test_fsdp_needs_torchrun_and_a_known_wrapper(char_data, tmp_path):
    proc = train(char_data, tmp_path / 'one', '--max_iters=1', '--data_parallel=fsdp')
    assert 'one process trains unsharded' in proc.stdout
    proc = train(char_data, tmp_path / 'bad', '--max_iters=1', '--data_parallel=zero3', check=False)
    assert proc.returncode != 0 and "data_parallel='zero3': use 'ddp' or 'fsdp'" in proc.stderr
    assert 'Traceback' not in proc.stderr and not os.path.exists(tmp_path / 'bad')


@pytest.mark.slow
def test_fsdp_float16_overflow_on_one_shard_skips_the_step_on_every_rank():
    proc = run_ranks('tests/fsdp_float16_worker.py', timeout=300)
    for rank in (0, 1):
        assert f"rank {rank}: tied True, units 3, unchanged True, scale 65536.0 -> 32768.0" in proc.stdout, proc.stdout
        assert f"rank {rank}: next step changed every shard True" in proc.stdout, proc.stdout
