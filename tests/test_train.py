"""
train.py end to end on the CPU: the LR schedule, the loss falling and a complete checkpoint, exact resumes, the
checkpoint's shape winning on resume, best_val_loss only lowered, DDP over two gloo processes equal to one process
with twice the accumulation, per-rank dropout across resumes, every evaluation reading the same batches, a two-node
rendezvous on loopback, torchrun processes leaving before interpreter shutdown (end_distributed), finetuning a
Hugging Face GPT-2 with a cropped block_size, missing-data and config errors, and the chunked loss. Losses are read
from the run's log.jsonl.
"""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import (REPO, TINY, after_meta, ddp_train, eval_losses, free_port, iter_losses, load_init_weights,
                      load_model_state, one_line_error, run_script, torchrun, train)

from nanogpt.tokenfiles import TokenWriter
from train import get_lr


def test_lr_schedule():
    lrs = [get_lr(it, 1.0, 10, 100, 0.1) for it in range(120)]
    assert 0 < lrs[0] < lrs[1] < lrs[9] < lrs[10] == pytest.approx(1.0)  # warmup starts above zero
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then only decays
    assert lrs[55] == pytest.approx(0.1 + 0.5 * 0.9)  # half way down the cosine
    assert lrs[100] == pytest.approx(0.1) and lrs[119] == 0.1


def test_loss_falls_and_checkpoint_is_complete(char_data, tmp_path):
    proc = train(char_data, tmp_path, '--max_iters=60', '--lr_decay_iters=60', '--eval_interval=30')
    val = eval_losses(tmp_path)
    assert sorted(val) == [0, 30, 60]
    assert val[60] < val[0] - 1.0, val
    assert 'tok/s' in proc.stdout and 'eta' in proc.stdout and "config: {" in proc.stdout
    ckpt = load_model_state(tmp_path)
    assert ckpt['iter_num'] == 60 and ckpt['best_val_loss'] == pytest.approx(val[60], abs=1e-4)
    assert set(ckpt) >= {'model', 'optimizer', 'scaler', 'model_args', 'iter_num', 'best_val_loss', 'config',
                         'loader', 'rng'}
    assert not any(k.startswith('_orig_mod') for k in ckpt['model'])
    assert ckpt['model_args']['vocab_size'] == 16  # the characters of the dataset, from meta.pkl
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'log.jsonl']  # no temporary files nor lock left behind
    # sample.py reads it with the dataset's characters
    proc = run_script('sample.py', f'--out_dir={tmp_path}', '--start=to', '--num_samples=1', '--max_new_tokens=30',
                      '--device=cpu')
    assert set(after_meta(proc.stdout).replace('-', '')) <= set('to bernhaqusiwlf\n')


def test_resume_continues_exactly(char_data, tmp_path):
    # dropout on, so the restored RNG state matters as much as the data position
    args = ['--dropout=0.1', '--eval_interval=5', '--lr_decay_iters=10']
    train(char_data, tmp_path / 'a', '--max_iters=10', *args)
    train(char_data, tmp_path / 'b', '--max_iters=5', *args)
    train(char_data, tmp_path / 'b', '--max_iters=10', '--init_from=resume', *args)
    a, b = iter_losses(tmp_path / 'a'), iter_losses(tmp_path / 'b')
    assert sorted(b) == [6, 7, 8, 9, 10]
    assert all(a[i] == b[i] for i in b), (a, b)
    sa, sb = load_model_state(tmp_path / 'a'), load_model_state(tmp_path / 'b')
    for k, v in sa['model'].items():
        assert torch.equal(v, sb['model'][k]), k
    assert sa['loader'] == sb['loader'] and sa['iter_num'] == sb['iter_num'] == 10


def test_a_resume_checks_the_log_is_its_runs_and_notes_a_dataset_prepared_again(char_data, tmp_path):
    import shutil
    args = ['--max_iters=2', '--eval_interval=2']
    train(char_data, tmp_path / 'a', *args)
    train(char_data, tmp_path / 'b', *args)
    # another run's checkpoint copied into b: its records would mix with b's in b's log
    shutil.copy(tmp_path / 'a' / 'ckpt.pt', tmp_path / 'b' / 'ckpt.pt')
    log = (tmp_path / 'b' / 'log.jsonl').read_bytes()
    one_line_error(train(char_data, tmp_path / 'b', '--max_iters=4', '--init_from=resume', check=False),
                   'is not a checkpoint of the run', 'log.jsonl records')
    assert (tmp_path / 'b' / 'log.jsonl').read_bytes() == log
    # b's own checkpoint back, and another run's records appended to its log: refused as well
    train(char_data, tmp_path / 'd', *args)
    with open(tmp_path / 'd' / 'log.jsonl', 'ab') as f:
        f.write((tmp_path / 'a' / 'log.jsonl').read_bytes())
    one_line_error(train(char_data, tmp_path / 'd', '--max_iters=4', '--init_from=resume', check=False),
                   'is not a checkpoint of the run', 'log.jsonl records')
    # eval_only without --init_from=resume evaluates a new model: said, since a checkpoint is there
    assert 'is not read (--init_from=resume reads it)' in train(char_data, tmp_path / 'a', '--eval_only=True').stdout
    one_line_error(train(str(tmp_path / 'd'), tmp_path / 'e', '--max_iters=1', check=False),
                   "this is a run's folder (an out_dir), not a dataset's")
    # a run folder copied twice, each copy resumed apart (one run id, two histories), then one's checkpoint put in
    # the other: the log it would keep is the other copy's
    shutil.copytree(tmp_path / 'a', tmp_path / 'fork1')
    shutil.copytree(tmp_path / 'a', tmp_path / 'fork2')
    train(char_data, tmp_path / 'fork1', '--max_iters=4', '--eval_interval=2', '--init_from=resume')
    train(char_data, tmp_path / 'fork2', '--max_iters=6', '--eval_interval=2', '--init_from=resume')
    shutil.copy(tmp_path / 'fork1' / 'ckpt.pt', tmp_path / 'fork2' / 'ckpt.pt')
    one_line_error(train(char_data, tmp_path / 'fork2', '--max_iters=8', '--init_from=resume', check=False),
                   'is not a checkpoint of the run')
    train(char_data, tmp_path / 'fork1', '--max_iters=8', '--eval_interval=2', '--init_from=resume')  # its own: goes on
    # the dataset prepared again from another text of the same characters, and another folder: said, the run goes on
    data = tmp_path / 'data'
    shutil.copytree(char_data, data)
    train(str(data), tmp_path / 'c', *args)
    (data / 'input.txt').write_text(' '.join(['that is the question'] * 3000) + '\n' + open(
        os.path.join(char_data, 'input.txt')).read()[-2000:])
    run_script('data/shakespeare_char/prepare.py', '--input', str(data / 'input.txt'), '--out_dir', str(data))
    resumed = train(str(data), tmp_path / 'c', '--max_iters=4', '--eval_interval=2', '--init_from=resume')
    assert f'note: {data} was prepared again since' in resumed.stdout
    resumed = train(char_data, tmp_path / 'c', '--max_iters=6', '--eval_interval=2', '--init_from=resume')
    assert f'trained on {data}; this run reads {char_data}' in resumed.stdout


def test_resume_keeps_the_checkpoints_model_shape(char_data, tmp_path):
    # as in nanoGPT, the checkpoint's shape wins over the config's; the run says what it ignored
    args = ['--eval_interval=3', '--lr_decay_iters=6']
    train(char_data, tmp_path / 'a', '--max_iters=6', *args)
    train(char_data, tmp_path / 'b', '--max_iters=3', *args)
    resumed = train(char_data, tmp_path / 'b', '--max_iters=6', '--init_from=resume', '--n_layer=3', '--n_embd=48',
                    '--block_size=16', *args)
    assert ("note: resuming with the checkpoint's model shape: n_layer=2 (config: 3), n_embd=32 (config: 48), "
            "block_size=32 (config: 16)") in resumed.stdout
    a, b = iter_losses(tmp_path / 'a'), iter_losses(tmp_path / 'b')
    assert sorted(b) == [4, 5, 6] and all(a[i] == b[i] for i in b), (a, b)
    ckpt = load_model_state(tmp_path / 'b')
    assert ckpt['model_args']['n_layer'] == ckpt['config']['n_layer'] == 2
    assert ckpt['config']['block_size'] == 32
    # once more with the same max_iters: the run is finished, and says so
    again = train(char_data, tmp_path / 'b', '--max_iters=6', '--init_from=resume', *args)
    assert "note: the checkpoint is at iter 6, max_iters=6: nothing to train; raise max_iters" in again.stdout
    assert load_model_state(tmp_path / 'b')['iter_num'] == 6


def test_best_val_loss_is_only_lowered(char_data, tmp_path):
    # a learning rate this high makes the val loss climb after the first steps
    train(char_data, tmp_path, '--max_iters=12', '--eval_interval=3', '--learning_rate=0.5',
          '--warmup_iters=0', '--decay_lr=False', '--always_save_checkpoint=True')
    val = eval_losses(tmp_path)
    assert load_model_state(tmp_path)['best_val_loss'] == pytest.approx(min(val.values()), abs=1e-4)
    assert max(val.values()) > min(val.values())


def ranks_rng_differ(ckpt) -> bool:
    return not torch.equal(ckpt['rng'][0]['cpu'], ckpt['rng'][1]['cpu'])


@pytest.mark.slow
def test_ddp_equals_single_process_with_twice_the_accumulation(char_data, tmp_path):
    # 4 micro-steps: 2 per rank under DDP, so the gradients of the first one must wait for the second (no_sync)
    common = ['--max_iters=4', '--eval_interval=2', '--dropout=0.0', '--gradient_accumulation_steps=4',
              '--eval_iters=4']
    train(char_data, tmp_path / 'single', *common)
    ddp_train(char_data, tmp_path / 'ddp', *common, fresh=True)  # under torchrun itself, as a user runs it
    # the eval batches are spread over the ranks and the rank means averaged: the same figures as one process
    a, b = eval_losses(tmp_path / 'single'), eval_losses(tmp_path / 'ddp')
    assert sorted(a) == sorted(b) == [0, 2, 4]
    assert all(abs(a[i] - b[i]) <= 1e-4 for i in a), (a, b)
    ss, sd = load_model_state(tmp_path / 'single'), load_model_state(tmp_path / 'ddp')
    assert sd['world_size'] == 2 and set(sd['rng']) == {0, 1}
    for k, v in ss['model'].items():
        assert torch.allclose(v, sd['model'][k], atol=1e-6, rtol=1e-5), (k, (v - sd['model'][k]).abs().max())
    assert not torch.equal(ss['model']['lm_head.weight'], load_init_weights(char_data)), 'nothing trained'


@pytest.mark.slow
def test_ddp_ranks_draw_their_own_dropout_and_resume_exactly(char_data, tmp_path):
    args = ['--dropout=0.1', '--eval_interval=3', '--gradient_accumulation_steps=4', '--eval_iters=2']
    ddp_train(char_data, tmp_path / 'whole', '--max_iters=6', *args)
    ddp_train(char_data, tmp_path / 'cut', '--max_iters=3', *args)
    first = load_model_state(tmp_path / 'cut')
    assert first['iter_num'] == 3 and ranks_rng_differ(first)  # every rank its own dropout masks
    shutil.copytree(tmp_path / 'cut', tmp_path / 'fitted')
    ddp_train(char_data, tmp_path / 'cut', '--max_iters=6', '--init_from=resume', *args)
    whole, resumed = load_model_state(tmp_path / 'whole'), load_model_state(tmp_path / 'cut')
    assert resumed['iter_num'] == 6 and ranks_rng_differ(resumed)  # and still after the resume
    for k, v in whole['model'].items():
        assert torch.equal(v, resumed['model'][k]), k
    assert all(torch.equal(whole['rng'][r]['cpu'], resumed['rng'][r]['cpu']) for r in (0, 1))
    # the checkpoint of a run whose micro-batch was fitted (8 rows, 4 accumulated over 2 ranks, where 16 x 2 were
    # asked): resumed with the sizes asked, it keeps the fitted ones, 2 micro-steps per rank, and continues exactly
    proc = ddp_train(char_data, tmp_path / 'fitted', '--max_iters=6', '--init_from=resume', *args, '--batch_size=16',
                     '--gradient_accumulation_steps=2')
    assert "resuming with the checkpoint's batch_size=8 and gradient_accumulation_steps=4" in proc.stdout
    fitted = load_model_state(tmp_path / 'fitted')
    assert (fitted['config']['batch_size'], fitted['config']['gradient_accumulation_steps']) == (8, 4)
    for k, v in whole['model'].items():
        assert torch.equal(v, fitted['model'][k]), k


def test_every_evaluation_reads_the_same_batches(char_data, tmp_path):
    # with the weights held still (learning rate 0), each evaluation must report the very same losses
    train(char_data, tmp_path, '--max_iters=6', '--eval_interval=2', '--learning_rate=0', '--min_lr=0',
          '--dropout=0.1')
    val = eval_losses(tmp_path)
    train_losses = list(eval_losses(tmp_path, 'train_loss').values())
    assert sorted(val) == [0, 2, 4, 6] and len(set(val.values())) == 1, val
    assert len(train_losses) == 4 and len(set(train_losses)) == 1, train_losses


@pytest.mark.slow
def test_two_node_rendezvous_on_loopback(char_data, tmp_path):
    port = free_port()
    procs = []
    for node_rank in range(2):
        cmd = torchrun('--nnodes=2', '--nproc_per_node=1', f'--node_rank={node_rank}', '--master_addr=127.0.0.1',
                       f'--master_port={port}', 'train.py', *TINY, f'--dataset={char_data}',
                       f'--out_dir={tmp_path}', '--max_iters=3', '--eval_interval=3', '--gradient_accumulation_steps=2')
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    assert 'iter 3:' in outs[0][0] and 'iter 3:' not in outs[1][0]  # only the global rank 0 logs
    assert load_model_state(tmp_path)['world_size'] == 2


@pytest.mark.slow
def test_end_distributed_leaves_before_interpreter_shutdown(tmp_path):
    """A gloo thread still releasing the last collective's tensors aborts a process in interpreter shutdown (2 to 8
    of 25 launches on a loaded machine: benchmarks/exit_race.py), so end_distributed must leave before it: atexit
    handlers, which run first in that shutdown, never run; the exit code goes through; both ranks finish."""
    script = tmp_path / 'worker.py'
    script.write_text(f"""import atexit, sys
sys.path.insert(0, {REPO!r})
import torch
from nanogpt.runtime import end_distributed
torch.distributed.init_process_group('gloo')
atexit.register(print, 'interpreter shutdown ran', flush=True)
sys.stdout.write(f'rank {{torch.distributed.get_rank()}} ending\\n')  # one write: the ranks share stdout
end_distributed(3)
""")
    proc = subprocess.run(torchrun('--standalone', '--nproc_per_node=2', str(script)), capture_output=True, text=True,
                          timeout=300)
    assert 'rank 0 ending' in proc.stdout and 'rank 1 ending' in proc.stdout, proc.stderr[-2000:]
    assert 'interpreter shutdown ran' not in proc.stdout
    assert proc.returncode != 0 and re.search(r'exitcode\s*:\s*3\b', proc.stderr), proc.stderr[-2000:]


def test_finetune_pretrained_crops_block_size(hf_gpt2_dir, tmp_path):
    d = tmp_path / 'bpe'
    d.mkdir()
    for split in ('train', 'val'):
        with TokenWriter(str(d), split) as w:
            w.write(np.random.default_rng(0).integers(0, 50257, 2000))
    proc = run_script('train.py', *TINY, f'--dataset={d}', f'--out_dir={tmp_path / "out"}', f'--init_from={hf_gpt2_dir}',
                      '--max_iters=2', '--eval_interval=2', '--bias=True', '--n_layer=2', '--n_head=4', '--n_embd=64')
    assert f'Initializing from a GPT-2 folder: {hf_gpt2_dir}' in proc.stdout and 'OpenAI' not in proc.stdout
    ckpt = load_model_state(tmp_path / 'out')
    assert ckpt['model_args']['block_size'] == 32 and ckpt['model']['transformer.wpe.weight'].shape == (32, 64)
    proc = run_script('train.py', *TINY, f'--dataset={d}', f'--out_dir={tmp_path / "out2"}', f'--init_from={hf_gpt2_dir}',
                      '--block_size=256', check=False)
    assert proc.returncode != 0 and "above the pretrained model's 128" in proc.stderr


@pytest.mark.skipif(os.path.exists(os.path.join(REPO, 'data', 'openwebtext', 'train.bin')),
                    reason='data/openwebtext is prepared on this machine, so there is no missing-data error to see')
def test_missing_dataset_names_its_prepare_script(tmp_path):
    proc = run_script('train.py', *TINY, '--dataset=openwebtext', f'--out_dir={tmp_path}', check=False)
    assert proc.returncode != 0 and 'run python data/openwebtext/prepare.py' in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr


def test_error_messages(char_data, tmp_path):
    proc = train(char_data, tmp_path / 'none', '--init_from=resume', check=False)
    assert proc.returncode != 0 and 'no checkpoint at' in proc.stderr
    proc = train(char_data, tmp_path, '--gradient_accumulation_steps=3', check=False,
                 env={'WORLD_SIZE': '2', 'RANK': '0', 'MASTER_ADDR': 'localhost', 'MASTER_PORT': '29500'})
    assert proc.returncode != 0 and 'not divisible by the 2 processes' in proc.stderr
    proc = train(char_data, tmp_path, '--learning_rat=1', check=False)
    assert proc.returncode != 0 and "did you mean 'learning_rate'" in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.skipif(not hasattr(torch.nn, 'LinearCrossEntropyOptions'), reason='chunked_loss needs torch >= 2.13')
def test_chunked_loss_trains_like_the_plain_loss(char_data, tmp_path):
    args = ['--max_iters=4', '--eval_interval=4', '--lr_decay_iters=4']
    train(char_data, tmp_path / 'plain', *args)
    train(char_data, tmp_path / 'chunked', *args, '--chunked_loss=True')
    a, b = iter_losses(tmp_path / 'plain'), iter_losses(tmp_path / 'chunked')
    assert sorted(b) == [1, 2, 3, 4] and all(abs(a[i] - b[i]) < 1e-4 for i in a), (a, b)
    assert abs(eval_losses(tmp_path / 'plain')[4] - eval_losses(tmp_path / 'chunked')[4]) < 1e-4
