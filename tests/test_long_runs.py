"""
Long runs: a new run never overwrites an earlier one's checkpoint, torchrun restarts and SIGTERM continue exactly,
non-finite steps are skipped and stop the run without touching the checkpoint, log.jsonl records each iteration
once across resumes, and plot.py draws it.
"""
import os
import signal
import struct
import subprocess

import pytest
import torch

from conftest import (REPO, TINY, iter_losses, load_model_state, one_line_error, popen_script, read_log, run_code,
                      run_script, snapshot, torchrun, train, watchdog)


def assert_same_weights(a, b):
    sa, sb = load_model_state(a), load_model_state(b)
    assert sa['iter_num'] == sb['iter_num']
    for k, v in sa['model'].items():
        assert torch.equal(v, sb['model'][k]), k


def test_a_new_run_does_not_overwrite_a_checkpoint(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    before = snapshot(tmp_path)
    proc = train(char_data, tmp_path, '--max_iters=4', check=False)
    one_line_error(proc, 'holds the checkpoint of an earlier run', '--init_from=resume', 'another out_dir')
    assert snapshot(tmp_path) == before
    train(char_data, tmp_path, '--max_iters=4', '--eval_interval=2', '--init_from=resume')  # what it says works
    assert load_model_state(tmp_path)['iter_num'] == 4


@pytest.mark.slow
def test_torchrun_restart_continues_exactly(char_data, tmp_path):
    # two gloo ranks under torchrun, rank 0 killed with SIGKILL twice: before the first checkpoint (the restart
    # starts over) and after it (the restart resumes from it); both end with the very weights of a run never
    # interrupted. Each kill comes many iterations before the next checkpoint, so a slow reader of the output
    # cannot kill too late.
    args = [*TINY, f'--dataset={char_data}', '--max_iters=60', '--eval_interval=1000', '--checkpoint_interval=20',
            '--dropout=0.1', '--gradient_accumulation_steps=4']
    whole = subprocess.run(torchrun('--standalone', '--nproc_per_node=2', 'train.py', *args,
                                    f'--out_dir={tmp_path / "whole"}'), cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    # the restarted workers must not share torchrun's rendezvous store with the first ones: with it, a restarted
    # rank can read the address a dead rank published (pytorch/pytorch#135712), as the README says
    env = dict(os.environ, PYTHONUNBUFFERED='1', TORCH_DISABLE_SHARE_RDZV_TCP_STORE='1')
    proc = subprocess.Popen(torchrun('--standalone', '--nproc_per_node=2', '--max-restarts=2', 'train.py', *args,
                                     f'--out_dir={tmp_path / "restarted"}'), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    watchdog(proc)
    kills = iter(['iter 2:', 'iter 30:'])  # the first attempt's iter 2, then the second attempt's iter 30
    kill_at, resumed_before_second_kill = next(kills), None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_at and line.startswith(kill_at):
            workers = subprocess.run(['pgrep', '-P', str(proc.pid)], capture_output=True, text=True).stdout.split()
            assert len(workers) == 2, workers
            os.kill(int(min(workers, key=int)), signal.SIGKILL)  # rank 0, the one that saves
            if kill_at == 'iter 30:':
                resumed_before_second_kill = 'restarted by torchrun: resuming' in ''.join(lines)
            kill_at = next(kills, None)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=600) == 0, ''.join(lines)[-2000:] + stderr[-3000:]
    assert kill_at is None and resumed_before_second_kill is False  # the first restart started over
    assert ''.join(lines).count('restarted by torchrun: resuming') == 1  # the second resumed
    assert_same_weights(tmp_path / 'whole', tmp_path / 'restarted')


def test_sigterm_saves_and_resume_continues_exactly(char_data, tmp_path):
    args = ['--max_iters=12', '--eval_interval=100', '--dropout=0.1', '--lr_decay_iters=12']
    train(char_data, tmp_path / 'whole', *args)
    proc = popen_script('train.py', *TINY, f'--dataset={char_data}', f'--out_dir={tmp_path / "stopped"}', *args)
    for line in proc.stdout:
        if line.startswith('iter 3:'):
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and 'Traceback' not in stderr, stderr[-2000:]
    stopped_at = load_model_state(tmp_path / 'stopped')['iter_num']
    assert 3 <= stopped_at < 12 and f'interrupted by SIGTERM at iter {stopped_at}' in stderr
    train(char_data, tmp_path / 'stopped', *args, '--init_from=resume')
    a, b = iter_losses(tmp_path / 'whole'), iter_losses(tmp_path / 'stopped')
    assert sorted(b) == list(range(stopped_at + 1, 13)) and all(a[i] == b[i] for i in b)
    assert_same_weights(tmp_path / 'whole', tmp_path / 'stopped')


def test_non_finite_steps_are_skipped_then_stop(char_data, tmp_path):
    out = tmp_path / 'out'
    train(char_data, out, '--max_iters=4', '--eval_interval=4')
    # from the 7th training forward on (after the 2 of nanogpt/fit.py's probe), the loss is NaN (a model that blew up):
    # train.py with GPT.forward wrapped
    code = ("import runpy, sys, model\n"
            "forward, calls = model.GPT.forward, [0]\n"
            "def nan_forward(self, idx, targets=None, **kw):\n"
            "    logits, loss = forward(self, idx, targets, **kw)\n"
            "    if self.training:\n"
            "        calls[0] += 1\n"
            "        if calls[0] > 2 + 6:\n"
            "            loss = loss * float('nan')\n"
            "    return logits, loss\n"
            "model.GPT.forward = nan_forward\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = run_code(code, os.path.join(REPO, 'train.py'), *TINY, f'--dataset={char_data}', f'--out_dir={out}',
                    '--init_from=resume', '--max_iters=30', '--eval_interval=3', '--max_bad_steps=4', check=False)
    one_line_error(proc, '4 steps in a row had a non-finite loss or gradients (iters 11 to 14)', 'max_bad_steps')
    assert 'step skipped (1 in a row)' in proc.stdout
    ckpt = load_model_state(out)
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values())
    assert ckpt['iter_num'] == 12  # iters 5..10 trained; the eval at 12 saved the (finite, unchanged) weights
    skipped = [(r['iter'], r['skipped']) for r in read_log(out) if 'skipped' in r]
    assert skipped == [(11, 1), (12, 2), (13, 3), (14, 4)]


def test_a_diverged_model_never_replaces_the_checkpoint(char_data, tmp_path):
    # a learning rate that blows the weights up (finite, then NaN): once an evaluation finds the val loss not finite,
    # neither its save nor checkpoint_interval's replaces the checkpoint, and the last line says which one there is
    out = tmp_path / 'out'
    train(char_data, out, '--max_iters=4', '--eval_interval=4')
    proc = train(char_data, out, '--init_from=resume', '--max_iters=9', '--eval_interval=3', '--checkpoint_interval=1',
                 '--learning_rate=1e30', '--decay_lr=False', '--max_bad_steps=100')
    assert 'step 6: the val loss is not finite: no checkpoint saved (' in proc.stdout
    assert proc.stdout.count('saving checkpoint') == 1  # iter 5's, before the evaluation at 6 found the divergence
    assert proc.stdout.splitlines()[-1].endswith('ckpt.pt is from iter 5')
    ckpt = load_model_state(out)
    assert ckpt['iter_num'] == 5 and all(torch.isfinite(v).all() for v in ckpt['model'].values())


def test_log_jsonl_across_a_resume_and_the_plot(char_data, tmp_path):
    args = [*TINY, f'--dataset={char_data}', '--max_iters=8', '--eval_interval=4', '--lr_decay_iters=8',
            '--checkpoint_interval=2']
    run_script('train.py', *args, f'--out_dir={tmp_path / "whole"}')
    # a run killed after iteration 5 (its last checkpoint at 4), then resumed: iteration 5 runs twice
    proc = popen_script('train.py', *args, f'--out_dir={tmp_path / "resumed"}')
    for line in proc.stdout:
        if line.startswith('iter 5:'):
            proc.kill()
            break
    proc.wait()
    assert load_model_state(tmp_path / 'resumed')['iter_num'] == 4
    run_script('train.py', *args, f'--out_dir={tmp_path / "resumed"}', '--init_from=resume')

    def comparable(out_dir):  # timings differ between runs; start records mark each run
        return [{k: v for k, v in r.items() if k not in ('ms', 'tok_per_s', 'mfu')} for r in read_log(out_dir)
                if 'params' not in r]

    whole, resumed = comparable(tmp_path / 'whole'), comparable(tmp_path / 'resumed')
    assert resumed == whole  # each iteration and evaluation once, with the same figures
    assert [r['iter'] for r in whole if 'loss' in r] == list(range(1, 9))
    assert [r['iter'] for r in whole if 'val_loss' in r] == [0, 4, 8]
    assert [r['iter'] for r in read_log(tmp_path / 'resumed') if 'params' in r] == [0, 4]

    proc = run_script('plot.py', str(tmp_path / 'whole'), str(tmp_path / 'resumed'),
                      f'--output={tmp_path / "both.png"}')
    assert 'wrote' in proc.stdout
    run_script('plot.py', str(tmp_path / 'whole'))
    for png in (tmp_path / 'both.png', tmp_path / 'whole' / 'loss.png'):
        header = png.read_bytes()[:24]
        assert header[:8] == b'\x89PNG\r\n\x1a\n'
        assert struct.unpack('>II', header[16:24]) == (1200, 840)
    proc = run_script('plot.py', str(tmp_path / 'nothing'), check=False)
    one_line_error(proc, 'log.jsonl', 'train.py writes it')
