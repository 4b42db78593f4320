"""
The mechanisms beneath the refusals, each tried with a real process: one-line errors under torchrun, the run folder
as a unit (its lock, its log), identity checks on resume, the one dataset reader, config types, outside files
checked before anything is built, a real full disk, and output failures that must not cost a checkpoint.
"""
import os
import pathlib
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import (REPO, TINY, iter_losses, load_model_state, one_line_error, run_script, snapshot, torchrun, train,
                      watchdog)


@pytest.mark.slow
def test_an_unforeseen_error_reaches_the_terminal_on_every_rank_under_torchrun(tmp_path, char_data):
    # out_dir below a file: os.makedirs fails on rank 0 after the process group is up, an OSError that the scripts'
    # hook turns into one line, which torch's own hook for distributed runs used to swallow
    (tmp_path / 'afile').write_text('')
    cmd = torchrun('--standalone', '--nproc_per_node=2', 'train.py', *TINY, f'--dataset={char_data}',
                   f'--out_dir={tmp_path}/afile/run', '--gradient_accumulation_steps=2', '--max_iters=2')
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert any('Not a directory' in line and 'afile' in line for line in lines), proc.stderr[-3000:]
    # the other rank, waiting for rank 0, says what happened to it rather than quoting gloo
    assert all('Not a directory' in line or 'lost the other ranks' in line for line in lines), lines
    # and under plain python, the same one line
    one_line_error(train(char_data, tmp_path / 'afile' / 'run', '--max_iters=2', check=False), 'Not a directory')


def popen_train(char_data, out_dir, *args):
    """train.py (TINY) started in the background, its stdout and stderr piped, killed by a watchdog if it hangs."""
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'train.py'), *TINY, f'--dataset={char_data}',
                             f'--out_dir={out_dir}', *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    watchdog(proc)
    return proc


def test_a_torn_last_log_record_is_dropped_and_the_run_resumes(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=4', '--eval_interval=4')
    with open(tmp_path / 'log.jsonl', 'a') as f:
        f.write('{"iter": 5, "loss": 2.1, "l')  # a kill mid-append
    proc = train(char_data, tmp_path, '--max_iters=6', '--eval_interval=4', '--init_from=resume')
    assert re.search(r'log.jsonl: skipped line\(s\) \d+, not records', proc.stdout), proc.stdout
    assert sorted(iter_losses(tmp_path)) == [5, 6]
    assert all(line.endswith('}') for line in (tmp_path / 'log.jsonl').read_text().splitlines())


def test_an_eval_only_run_and_a_refused_run_leave_the_folder_byte_identical(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=4', '--eval_interval=2')
    before = snapshot(tmp_path)
    proc = train(char_data, tmp_path, '--eval_only=True', '--init_from=resume')
    assert 'step 4: train loss' in proc.stdout
    assert snapshot(tmp_path) == before
    # a folder with the log of a run that saved no checkpoint: a new run would have truncated the log
    (tmp_path / 'ckpt.pt').unlink()
    before = snapshot(tmp_path)
    one_line_error(train(char_data, tmp_path, '--max_iters=2', check=False), 'log.jsonl holds the log of an earlier run',
                   'another out_dir')
    assert snapshot(tmp_path) == before


def test_a_second_run_into_a_held_folder_refuses_and_a_dead_holders_lock_is_taken_over(char_data, tmp_path):
    first = popen_train(char_data, tmp_path, '--max_iters=100000', '--eval_interval=2')
    for line in first.stdout:
        if line.startswith('iter 3:'):
            break
    os.kill(first.pid, signal.SIGSTOP)  # holds the folder, writes nothing while we look
    try:
        before = snapshot(tmp_path)
        for args in (['--init_from=resume'], []):
            one_line_error(train(char_data, tmp_path, '--max_iters=2', *args, check=False),
                           f'is in use by another run (pid {first.pid} on host', 'choose another out_dir')
        assert snapshot(tmp_path) == before
    finally:
        first.kill()
        first.wait()
    proc = train(char_data, tmp_path, '--max_iters=4', '--init_from=resume')
    assert f'run.lock was left by a run that did not end (pid {first.pid}' in proc.stdout
    assert (tmp_path / 'run.lock').read_text() == ''  # released at the end: the next run takes it silently
    assert 'run.lock' not in train(char_data, tmp_path, '--max_iters=6', '--init_from=resume').stdout


def test_ctrl_c_after_the_terminal_pipe_closed_still_saves(char_data, tmp_path):
    # `python train.py ... | tee log`, then Ctrl-C: tee dies first, and the next print meets a closed pipe
    proc = popen_train(char_data, tmp_path, '--max_iters=100000', '--eval_interval=1000')
    for line in proc.stdout:
        if line.startswith('iter 3:'):
            break
    proc.stdout.close()
    time.sleep(1)  # a few more prints go to the closed pipe
    proc.send_signal(signal.SIGINT)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, stderr[-2000:]
    assert 'Traceback' not in stderr and 'interrupted by SIGINT' in stderr, stderr[-2000:]
    assert load_model_state(tmp_path)['iter_num'] > 3


def test_files_the_project_writes_follow_the_umask(char_data, tmp_path, hf_gpt2_dir):
    os.umask(umask := os.umask(0o022))
    train(char_data, tmp_path / 'run', '--max_iters=2', '--eval_interval=2')
    run_script('export_hf.py', f'--out_dir={tmp_path / "run"}', f'--dest={tmp_path / "hf"}')
    for path in [tmp_path / 'run' / 'ckpt.pt', tmp_path / 'run' / 'log.jsonl', tmp_path / 'hf' / 'model.safetensors',
                 tmp_path / 'hf' / 'config.json', *(pathlib.Path(char_data).glob('*.bin'))]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs), where a root user may mount one; skipped elsewhere."""
    mount = tmp_path / 'small'
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2M', 'tmpfs', str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f'this machine does not allow mounting a tmpfs: {proc.stderr.strip()}')
    yield mount
    subprocess.run(['umount', str(mount)], check=True)


def test_a_really_full_disk_is_named_and_keeps_the_earlier_checkpoint(char_data, small_disk):
    out = small_disk / 'run'
    train(char_data, out, '--max_iters=2', '--eval_interval=2')
    size = os.path.getsize(out / 'ckpt.pt')
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / 'filler').write_bytes(b'\0' * (free - size // 2))  # room for the log, not for another checkpoint
    before = (out / 'ckpt.pt').read_bytes()
    proc = train(char_data, out, '--max_iters=4', '--eval_interval=2', '--init_from=resume', check=False)
    one_line_error(proc, 'the disk is full writing', 'ckpt.pt', 'free some space')
    assert (out / 'ckpt.pt').read_bytes() == before
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.jsonl', 'run.lock']  # no partial temporary file left
