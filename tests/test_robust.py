"""
The mechanisms beneath the refusals, each tried with a real process: one-line errors under torchrun, the run folder
as a unit (its lock, its log), identity checks on resume, the one dataset reader, config types, outside files
checked before anything is built, a real full disk, and output failures that must not cost a checkpoint.
"""
import json
import os
import pathlib
import pickle
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import torch
from conftest import (REPO, TINY, after_meta, bpe_data, eval_losses, iter_losses, load_model_state, one_line_error,
                      popen_script, read_log, run_ranks, run_script, snapshot, torchrun, train)


@pytest.mark.slow
def test_an_unforeseen_error_reaches_the_terminal_on_every_rank_under_torchrun(tmp_path, char_data):
    # an out_dir whose name the system refuses (no check foresees it): an OSError on rank 0 that the scripts' hook
    # turns into one line, which torch's own hook for distributed runs used to swallow
    out_dir = tmp_path / ('x' * 300) / 'run'
    cmd = torchrun('--standalone', '--nproc_per_node=2', 'train.py', *TINY, f'--dataset={char_data}',
                   f'--out_dir={out_dir}', '--gradient_accumulation_steps=2', '--max_iters=2')
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert any('File name too long' in line and 'xxx' in line for line in lines), proc.stderr[-3000:]
    # the other rank, waiting for rank 0, says what happened to it rather than quoting gloo
    assert all('File name too long' in line or 'lost the other ranks' in line for line in lines), lines
    # and under plain python, the same one line
    one_line_error(train(char_data, out_dir, '--max_iters=2', check=False), 'File name too long')


def run_measured(*args, timeout=300):
    """(CompletedProcess of `python <args>`, its peak resident memory in bytes), through tests/limited.py."""
    proc = run_script('tests/limited.py', '0', *args, check=False, timeout=timeout)
    peak = re.search(r'VmHWM:\s+(\d+) kB', proc.stderr)
    return proc, int(peak.group(1)) * 1024


def popen_train(char_data, out_dir, *args, fresh=False):
    """train.py (TINY) started in the background, its stdout and stderr piped, killed by a watchdog if it hangs."""
    return popen_script('train.py', *TINY, f'--dataset={char_data}', f'--out_dir={out_dir}', *args, fresh=fresh)


@pytest.mark.slow
def test_a_torchrun_restart_does_not_take_over_another_runs_folder(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    before = snapshot(tmp_path)
    proc = subprocess.run(torchrun('--standalone', '--nproc_per_node=1', '--max-restarts=1', 'train.py', *TINY,
                                   f'--dataset={char_data}', f'--out_dir={tmp_path}', '--max_iters=4'), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    # refused by the first attempt and by the restart alike: the restart is of another job than the folder's
    assert proc.stderr.count('holds the checkpoint of an earlier run') == 2, proc.stderr[-3000:]
    assert snapshot(tmp_path) == before


def test_lines_of_the_log_that_are_no_records_are_kept_and_the_run_resumes(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=4', '--eval_interval=4')
    lines = (tmp_path / 'log.jsonl').read_text().splitlines()
    n = len(lines)
    (tmp_path / 'log.jsonl').write_text('\n'.join(lines[:2] + ['{"iter": 1, "loss": "2.5", "lr": 0.1}'] + lines[2:]) +
                                        '\n{"loss": 2}\n[4, 2.0]\n'  # valid JSON that no train.py writes
                                        '{"iter": 5, "loss": 2.1, "l')  # a kill mid-append
    proc = train(char_data, tmp_path, '--max_iters=6', '--eval_interval=4', '--init_from=resume')
    assert f'log.jsonl: line(s) 3, {n + 2}, {n + 3}, {n + 4} are not records of a run' in proc.stdout, proc.stdout
    assert 'kept as they are' in proc.stdout
    text = (tmp_path / 'log.jsonl').read_text()  # an edited line and garbage are kept, the torn one closed
    assert '{"iter": 1, "loss": "2.5", "lr": 0.1}\n' in text
    assert '{"loss": 2}\n[4, 2.0]\n{"iter": 5, "loss": 2.1, "l\n{' in text  # the next record on a line of its own
    assert sorted(iter_losses(tmp_path)) == [5, 6]


def test_an_eval_only_run_and_a_refused_run_leave_the_folder_byte_identical(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=4', '--eval_interval=2')
    before = snapshot(tmp_path)
    proc = train(char_data, tmp_path, '--eval_only=True', '--init_from=resume')
    assert 'step 4: train loss' in proc.stdout
    assert snapshot(tmp_path) == before
    # a folder with the log of a run that saved no checkpoint: a new run would have truncated the log
    (tmp_path / 'ckpt.pt').unlink()
    before = snapshot(tmp_path)
    one_line_error(train(char_data, tmp_path, '--max_iters=2', check=False),
                   'log.jsonl holds the log of an earlier run', 'another out_dir')
    assert snapshot(tmp_path) == before


def test_a_held_folder_whose_run_lock_was_removed_by_hand_is_still_held(char_data, tmp_path):
    first = popen_train(char_data, tmp_path, '--max_iters=100000', '--eval_interval=2')
    for line in first.stdout:
        if line.startswith('iter 3:'):
            break
    try:
        os.remove(tmp_path / 'run.lock')  # the folder itself is held too: a second run mixed its files in before
        one_line_error(train(char_data, tmp_path, '--max_iters=2', '--init_from=resume', check=False),
                       'is in use by another run (whose run.lock was removed)', 'choose another out_dir')
    finally:
        first.kill()
        first.wait()


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
    assert f'run.lock was left by a run that did not end, or was copied with its folder (pid {first.pid}' in proc.stdout
    assert not (tmp_path / 'run.lock').exists()  # released at the end: the next run takes the folder silently
    assert 'run.lock' not in train(char_data, tmp_path, '--max_iters=6', '--init_from=resume').stdout
    (tmp_path / 'run.lock').write_bytes(b'\xff\xfe\x00garbage')  # not even UTF-8: said as it is, and taken over
    proc = train(char_data, tmp_path, '--max_iters=8', '--init_from=resume')
    assert "run.lock says '\ufffd\ufffd\\x00garbage'" in proc.stdout, proc.stdout


def test_a_lock_file_removed_between_its_open_and_its_lock_is_opened_again(tmp_path, monkeypatch):
    # a run opens run.lock just as the run holding it ends, removing the file before it lets go: the flock it then
    # gets is on a file no longer in the folder, which a third run would not see; it must lock the file at the path
    from nanogpt import rundir
    path = str(tmp_path / 'run.lock')
    opened, try_lock = [], rundir._try_lock

    def removed_after_open(p, create):
        f = try_lock(p, create)
        if not opened:
            os.remove(p)
        opened.append(os.fstat(f.fileno()).st_ino)
        return f

    monkeypatch.setattr(rundir, '_try_lock', removed_after_open)
    lock = rundir._lock(path)
    assert len(opened) == 2 and os.fstat(lock.fileno()).st_ino == os.stat(path).st_ino == opened[1]
    lock.close()
    os.remove(path)
    assert rundir._lock(path, create=False) is None and not os.path.exists(path)  # a look creates nothing


def test_ctrl_c_after_the_terminal_pipe_closed_still_saves(char_data, tmp_path):
    # `python train.py ... | tee log`, then Ctrl-C: tee dies first, and the next print meets a closed pipe (a new
    # interpreter: the signals and the pipe as a user's shell gives them)
    proc = popen_train(char_data, tmp_path, '--max_iters=100000', '--eval_interval=1000', fresh=True)
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
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2M', 'tmpfs', str(mount)], capture_output=True,
                          text=True)
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
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.jsonl']  # no partial temporary file left, no lock


def char_dataset(folder, text: str):
    """A character-level dataset prepared from text, as data/shakespeare_char/prepare.py writes one."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'input.txt').write_text(text)
    run_script('data/shakespeare_char/prepare.py', '--input', str(folder / 'input.txt'), '--out_dir', str(folder))
    return folder


def test_resume_and_finetune_refuse_a_dataset_whose_ids_mean_other_tokens(char_data, tmp_path, hf_gpt2_dir):
    train(char_data, tmp_path / 'run', '--max_iters=2', '--eval_interval=2')
    before = snapshot(tmp_path / 'run')
    text = (pathlib.Path(char_data) / 'input.txt').read_text()
    others = {'fewer characters': text.replace('q', 'u'),  # 15 characters: the same text without a 'q'
              'same count, other characters': text.replace('q', 'Q')}  # prepared again from another text
    for name, other in others.items():
        data = char_dataset(tmp_path / name.replace(' ', '_').replace(',', ''), other)
        proc = train(data, tmp_path / 'run', '--max_iters=4', '--init_from=resume', check=False)
        one_line_error(proc, 'ckpt.pt was trained on a vocabulary of 16 characters', str(data), 'start a new run')
        assert snapshot(tmp_path / 'run') == before, name
    # GPT-2's BPE weights on character ids
    proc = train(char_data, tmp_path / 'ft', f'--init_from={hf_gpt2_dir}', check=False)
    one_line_error(proc, "was trained on GPT-2's BPE tokens", 'a vocabulary of 16 characters')
    # nanoGPT's own checkpoint of a character model carries no characters (nor loader, RNG or scaler state): its
    # vocabulary size is all there is to hold against a dataset's, and its own dataset resumes it
    ckpt = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)
    nanogpt = {k: ckpt[k] for k in ('model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config')}
    (tmp_path / 'nanogpt').mkdir()
    torch.save(nanogpt, tmp_path / 'nanogpt' / 'ckpt.pt')
    proc = train(tmp_path / 'fewer_characters', tmp_path / 'nanogpt', '--max_iters=4', '--init_from=resume',
                 check=False)
    one_line_error(proc, 'ckpt.pt was trained on 16 character ids (characters unknown)', 'start a new run')
    train(char_data, tmp_path / 'nanogpt', '--max_iters=4', '--eval_interval=2', '--init_from=resume')
    assert load_model_state(tmp_path / 'nanogpt')['iter_num'] == 4


def test_the_one_dataset_reader_applies_every_check_for_every_script(char_data, tmp_path):
    def refused(data, *fragments):
        one_line_error(train(data, tmp_path / 'out', '--max_iters=1', check=False), *fragments)
        one_line_error(run_script('perplexity.py', f'--out_dir={tmp_path / "model"}', f'--dataset={data}',
                                  '--device=cpu', check=False), *fragments)
        assert not (tmp_path / 'out').exists()

    train(char_data, tmp_path / 'model', '--max_iters=1', '--eval_interval=1')
    text = (pathlib.Path(char_data) / 'input.txt').read_text()
    words = text.split(' ')
    # a token file swapped for one of the same size from another prepare (the same words in another order)
    shuffled = ' '.join(words[1:] + words[:1])
    assert len(shuffled) == len(text)
    a, b = char_dataset(tmp_path / 'a', text), char_dataset(tmp_path / 'b', shuffled)
    assert os.path.getsize(a / 'val.bin') == os.path.getsize(b / 'val.bin')
    (a / 'val.bin').write_bytes((b / 'val.bin').read_bytes())
    refused(a, 'val.bin changed since the prepare that wrote meta.json', 'prepare it again')
    # a token id equal to the vocabulary size (16) in a nanoGPT-style dataset: no meta.json, only meta.pkl
    c = char_dataset(tmp_path / 'c', text)
    (c / 'meta.json').unlink()
    ids = bytearray((c / 'val.bin').read_bytes())
    ids[100:102] = (16).to_bytes(2, 'little')
    (c / 'val.bin').write_bytes(bytes(ids))
    refused(c, 'holds token id 16', 'vocabulary of 16')
    proc = train(c, tmp_path / 'out', '--max_iters=1', check=False)
    assert 'has no meta.json (prepared by nanoGPT' in proc.stdout  # what cannot be checked is said
    # meta.json without characters beside nanoGPT's meta.pkl: the characters are meta.pkl's, not a BPE vocabulary
    d = char_dataset(tmp_path / 'd', text)
    meta = json.loads((d / 'meta.json').read_text())
    del meta['chars'], meta['tokenizer']
    (d / 'meta.json').write_text(json.dumps(meta))
    assert 'found vocab_size = 16' in train(d, tmp_path / 'd_out', '--max_iters=1').stdout
    meta['tokenizer'] = 'gpt2'
    (d / 'meta.json').write_text(json.dumps(meta))
    refused(d, "meta.json says the tokenizer is 'gpt2', but meta.pkl", 'prepare the dataset again')
    # meta.json that is not an object; numbered shards with a gap
    (d / 'meta.json').write_text('[1, 2]')
    refused(d, 'meta.json holds a JSON list', 'prepare the dataset again')
    e = tmp_path / 'e'
    e.mkdir()
    tokens = (pathlib.Path(char_data) / 'train.bin').read_bytes()
    for name in ('val_000000.bin', 'train_000001.bin', 'train_000003.bin'):
        (e / name).write_bytes(tokens[:4000])
    (e / 'meta.pkl').write_bytes((pathlib.Path(char_data) / 'meta.pkl').read_bytes())
    refused(e, 'has shards up to number 3 but not 000002')


def test_none_fits_only_keys_whose_default_is_none(char_data, tmp_path):
    for arg in ('--decay_lr=None', '--max_iters=None'):  # (a run that took None would end after 2 iterations)
        one_line_error(train(char_data, tmp_path, '--max_iters=2', arg, check=False), arg[2:].split('=')[0],
                       'got None')
    (tmp_path / 'cfg.py').write_text('from math import sqrt\nmax_iters = None\n')
    one_line_error(run_script('train.py', str(tmp_path / 'cfg.py'), check=False), 'max_iters must be a int', 'None')
    assert not os.path.exists(tmp_path / 'ckpt.pt')


def test_outside_files_are_checked_against_their_weights_before_anything_is_built(hf_gpt2_dir, tmp_path, char_data):
    import shutil
    for key, value in (('n_layer', 100000), ('vocab_size', 10 ** 9), ('n_positions', 10 ** 8)):
        folder = tmp_path / key
        shutil.copytree(hf_gpt2_dir, folder)
        config = json.loads((folder / 'config.json').read_text())
        config[key] = value
        (folder / 'config.json').write_text(json.dumps(config))
        proc, peak = run_measured('sample.py', f'--init_from={folder}', '--device=cpu', '--max_new_tokens=2')
        one_line_error(proc, 'config.json describes a model its weights are not', f'={value}')
        assert peak < 2 << 30, peak  # building what config.json says would take tens of GB
    # a checkpoint whose model_args disagree with its weights
    train(char_data, tmp_path / 'run', '--max_iters=1', '--eval_interval=1')
    ckpt = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)
    ckpt['model_args']['n_layer'] = 100000
    torch.save(ckpt, tmp_path / 'run' / 'ckpt.pt')
    one_line_error(run_script('sample.py', f'--out_dir={tmp_path / "run"}', '--device=cpu', check=False),
                   'ckpt.pt describes a model its weights are not', 'n_layer=100000 (the weights: 2)')
    # config.json without a key it needs; a pytorch_model.bin that would run code
    folder = tmp_path / 'no_positions'
    shutil.copytree(hf_gpt2_dir, folder)
    config = json.loads((folder / 'config.json').read_text())
    del config['n_positions']
    (folder / 'config.json').write_text(json.dumps(config))
    one_line_error(run_script('sample.py', f'--init_from={folder}', '--device=cpu', check=False),
                   "config.json has no 'n_positions'")
    folder = tmp_path / 'hostile'
    folder.mkdir()
    (folder / 'config.json').write_text((pathlib.Path(hf_gpt2_dir) / 'config.json').read_text())
    marker = tmp_path / 'pwned'
    with open(folder / 'pytorch_model.bin', 'wb') as f:
        pickle.dump(RunsCode(marker), f)
    proc = run_script('sample.py', f'--init_from={folder}', '--device=cpu', check=False)
    one_line_error(proc, 'refused to load', 'pytorch_model.bin', 'could run code')
    assert 'weights_only=False' not in proc.stderr and not marker.exists()


class RunsCode:
    """Unpickling this runs os.system: what a hostile weights file holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_an_exported_character_model_samples_from_its_folder(char_data, tmp_path, caplog):
    train(char_data, tmp_path / 'run', '--max_iters=2', '--eval_interval=2')
    run_script('export_hf.py', f'--out_dir={tmp_path / "run"}', f'--dest={tmp_path / "hf"}')
    # transformers loads it without a warning: no GPT-2 end-of-text id outside its 16 characters
    transformers = pytest.importorskip('transformers')
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    assert config['vocab_size'] == 16 and config['bos_token_id'] is None and config['eos_token_id'] is None
    transformers.logging.enable_propagation()
    try:
        with caplog.at_level('WARNING'):
            transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'hf')
    finally:
        transformers.logging.disable_propagation()
    assert not [r for r in caplog.records if r.levelname == 'WARNING'], caplog.text
    args = ['--device=cpu', '--num_samples=1', '--max_new_tokens=20', '--start=to be']
    from_ckpt = run_script('sample.py', f'--out_dir={tmp_path / "run"}', *args).stdout
    from_folder = run_script('sample.py', f'--init_from={tmp_path / "hf"}', *args).stdout
    assert after_meta(from_folder) == after_meta(from_ckpt)  # the same model, the same characters
    (tmp_path / 'hf' / 'meta.json').unlink()
    one_line_error(run_script('sample.py', f'--init_from={tmp_path / "hf"}', *args, check=False),
                   'a model of 16 characters', 'no meta.json', 'export_hf.py')


def test_errors_the_scripts_did_not_foresee_name_where_they_happened(tmp_path):
    # an assert with no message inside the model: the last-resort line still says where
    proc = subprocess.run([sys.executable, '-c', 'import model; from nanogpt.errors import one_line_errors; '
                           'one_line_errors(); '
                           'model.GPT(model.GPTConfig(n_embd=30, n_head=4))'], cwd=REPO, capture_output=True,
                          text=True)
    one_line_error(proc, 'AssertionError (at model.py:')


def test_gpt2s_tokenizer_files_missing_offline_is_one_line_that_says_how(hf_gpt2_dir, tmp_path):
    try:
        socket.create_connection(('openaipublic.blob.core.windows.net', 443), timeout=3).close()
        pytest.skip('this machine is online: tiktoken would download the files')
    except OSError:
        pass
    (tmp_path / 'empty').mkdir()
    proc = run_script('sample.py', f'--init_from={hf_gpt2_dir}', '--device=cpu', '--max_new_tokens=2', check=False,
                      env={'TIKTOKEN_CACHE_DIR': str(tmp_path / 'empty')})
    one_line_error(proc, "GPT-2's tokenizer files are not in tiktoken's cache", 'TIKTOKEN_CACHE_DIR')


# -----------------------------------------------------------------------------
# what the suite would not have noticed: each test below fails when the line that does the work is removed

@pytest.mark.slow
def test_ranks_decide_skipped_steps_and_stop_requests_together(tmp_path):
    proc = run_ranks('tests/guard_worker.py', timeout=300)
    decided = dict(re.findall(r'(rank \d): (\[.*?\])', proc.stdout))
    assert decided['rank 0'] == decided['rank 1'], decided
    expected = [(True, 0), (False, int(signal.SIGTERM))] + [(i % 2 == 0, int(signal.SIGTERM)) for i in range(6)]
    assert decided['rank 0'] == str(expected)  # and isolated bad steps never add up to max_bad_steps=3


def test_a_resumed_run_keeps_its_best_val_loss_and_its_better_checkpoint(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=6', '--eval_interval=3', '--always_save_checkpoint=False')
    best = load_model_state(tmp_path)['best_val_loss']
    before = (tmp_path / 'ckpt.pt').read_bytes()
    # a learning rate that ruins the model: the next evaluation is worse, and must not replace the checkpoint
    proc = train(char_data, tmp_path, '--max_iters=9', '--eval_interval=3', '--always_save_checkpoint=False',
                 '--init_from=resume', '--learning_rate=5.0', '--min_lr=0.5', '--decay_lr=False')
    assert eval_losses(tmp_path)[9] > best
    assert (tmp_path / 'ckpt.pt').read_bytes() == before
    assert f"note: no checkpoint of iter 9 (its val loss {eval_losses(tmp_path)[9]:.4f} did not improve on " \
           f"{best:.4f} and always_save_checkpoint=False): {tmp_path}/ckpt.pt is from iter 6" in proc.stdout


def test_a_resumed_float16_run_continues_the_scalers_loss_scale(char_data, tmp_path):
    args = ['--dtype=float16', '--eval_interval=3', '--lr_decay_iters=6']
    train(char_data, tmp_path / 'whole', '--max_iters=6', *args)
    train(char_data, tmp_path / 'split', '--max_iters=3', *args)
    train(char_data, tmp_path / 'split', '--max_iters=6', '--init_from=resume', *args)
    whole, split = load_model_state(tmp_path / 'whole'), load_model_state(tmp_path / 'split')
    assert whole['scaler'] == split['scaler'] and whole['scaler']['_growth_tracker'] == 6
    assert all(torch.equal(whole['model'][k], split['model'][k]) for k in whole['model'])


def test_a_finetune_into_a_folder_with_another_runs_checkpoint_refuses(char_data, hf_gpt2_dir, tmp_path):
    train(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    before = snapshot(tmp_path)
    proc = train(char_data, tmp_path, f'--init_from={hf_gpt2_dir}', check=False)
    one_line_error(proc, 'holds the checkpoint of an earlier run')
    assert snapshot(tmp_path) == before


def test_the_exported_end_of_text_id_is_gpt2s(tmp_path, char_data, gpt2_tokenizer):
    bpe_data(tmp_path / 'bpe')
    train(tmp_path / 'bpe', tmp_path / 'run', '--max_iters=1', '--eval_interval=1', '--n_embd=16')
    run_script('export_hf.py', f'--out_dir={tmp_path / "run"}', f'--dest={tmp_path / "hf"}', '--trim_vocab=True')
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    assert config['eos_token_id'] == config['bos_token_id'] == gpt2_tokenizer.eot_token == 50256


def test_sample_uses_top_p(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=20', '--eval_interval=20')
    args = ['sample.py', f'--out_dir={tmp_path}', '--device=cpu', '--num_samples=3', '--max_new_tokens=30',
            '--top_k=None', '--temperature=2.0']
    greedy = after_meta(run_script(*args, '--top_k=1').stdout)
    nucleus = after_meta(run_script(*args, '--top_p=1e-6').stdout)  # only the most likely token is left
    assert nucleus == greedy
    assert after_meta(run_script(*args, '--top_p=1.0').stdout) != greedy  # temperature 2, all tokens: not greedy


def test_chunked_loss_gives_hellaswag_its_logits(char_data, tmp_path, gpt2_tokenizer):
    from test_eval import write_records
    records = tmp_path / 'hellaswag.jsonl'
    write_records(records, n=4)
    bpe_data(tmp_path / 'bpe')
    found = {}
    for chunked in (False, True):
        out = tmp_path / f'chunked_{chunked}'
        train(tmp_path / 'bpe', out, '--max_iters=1', '--n_embd=16', f'--chunked_loss={chunked}',
              '--hellaswag_interval=1', f'--hellaswag_file={records}')
        found[chunked] = [(r['hellaswag'], r['hellaswag_acc']) for r in read_log(out) if 'hellaswag' in r]
    assert found[True] == found[False] and len(found[True]) == 2


def test_cheap_checks_come_before_downloads(tmp_path):
    # no dataset: said before GPT-2's weights are fetched (offline here, so fetching would fail first)
    for config in ('config/eval_gpt2.py', 'config/finetune_shakespeare.py'):
        proc = run_script('train.py', config, '--device=cpu', f'--dataset={tmp_path / "missing"}',
                          f'--out_dir={tmp_path / "out"}', check=False)
        one_line_error(proc, 'no train data in', 'missing')
        assert 'loading weights' not in proc.stdout and not (tmp_path / 'out').exists()


def test_an_export_of_a_checkpoint_without_characters_takes_its_datasets_and_is_written_whole(char_data, tmp_path,
                                                                                              monkeypatch):
    import export_hf
    train(char_data, tmp_path / 'run', '--max_iters=2', '--eval_interval=2')
    checkpoint = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)
    torch.save({k: v for k, v in checkpoint.items() if k != 'vocab'}, tmp_path / 'run' / 'ckpt.pt')  # nanoGPT's
    export_hf.main([f'--out_dir={tmp_path / "run"}', f'--dest={tmp_path / "hf"}'])
    chars = json.loads((tmp_path / 'hf' / 'meta.json').read_text())['chars']
    assert list(chars) == checkpoint['vocab']
    # interrupted as it writes meta.json, its last file: no folder at dest, so the export can simply be run again
    monkeypatch.setattr(export_hf, 'write_json', lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        export_hf.main([f'--out_dir={tmp_path / "run"}', f'--dest={tmp_path / "hf2"}'])
    assert sorted(os.listdir(tmp_path)) == ['hf', 'run']
    (tmp_path / 'empty').mkdir()
    os.symlink(tmp_path / 'empty', tmp_path / 'link')  # replaced by the rename, not written into: refused
    with pytest.raises(SystemExit, match=r'link is a symbolic link: choose a new folder'):
        export_hf.main([f'--out_dir={tmp_path / "run"}', f'--dest={tmp_path / "link"}/'])
