"""
Bad inputs and faults, each through a real process: the exit code, a one-line message, and that nothing an earlier
run left was lost or changed. Nothing in a file the project reads may run code.
"""
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY, one_line_error, popen_script, run_code, run_script, snapshot, train


class RunsCode:
    """Unpickling this runs os.system: what a malicious checkpoint or meta.pkl would hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.fixture
def dataset(char_data, tmp_path):
    """A private copy of the character dataset, which a test may damage."""
    d = tmp_path / 'data'
    shutil.copytree(char_data, d)
    return d


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


# -----------------------------------------------------------------------------
# loading never runs code

@pytest.mark.parametrize('script', ['sample.py', 'export_hf.py', 'train.py'])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, script, char_data):
    marker = tmp_path / 'pwned'
    out = tmp_path / 'out'
    out.mkdir()
    torch.save({'model': {}, 'model_args': {'n_layer': 1}, 'iter_num': RunsCode(marker)}, out / 'ckpt.pt')
    args = {'sample.py': [f'--out_dir={out}', '--device=cpu'],
            'export_hf.py': [f'--out_dir={out}', f'--dest={tmp_path / "hf"}'],
            'train.py': [*TINY, f'--out_dir={out}', '--init_from=resume', f'--dataset={char_data}']}[script]
    proc = run_script(script, *args, check=False)
    one_line_error(proc, 'refused to load', 'could run code', 'posix.system')
    assert not marker.exists()


def test_a_meta_pkl_that_would_run_code_is_refused(dataset, tmp_path):
    marker = tmp_path / 'pwned'
    os.remove(dataset / 'meta.json')  # a nanoGPT dataset: the vocabulary only in meta.pkl
    with open(dataset / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 16, 'itos': RunsCode(marker), 'stoi': {}}, f)
    proc = train(dataset, tmp_path / 'out', '--max_iters=1', check=False)
    one_line_error(proc, 'meta.pkl is refused', 'posix.system', 'prepare the dataset again')
    assert not marker.exists() and not (tmp_path / 'out' / 'ckpt.pt').exists()


def test_nanogpt_meta_pkl_of_plain_data_still_loads(dataset, tmp_path):
    os.remove(dataset / 'meta.json')
    proc = train(dataset, tmp_path / 'out', '--max_iters=1', '--eval_interval=1')
    assert 'found vocab_size = 16' in proc.stdout


# -----------------------------------------------------------------------------
# a dataset is one unit

def test_an_empty_or_undecodable_input_leaves_the_dataset_untouched(dataset, tmp_path):
    before = snapshot(dataset)
    (tmp_path / 'empty.txt').write_text('')
    proc = run_script('data/shakespeare_char/prepare.py', '--input', str(tmp_path / 'empty.txt'), '--out_dir',
                      str(dataset), check=False)
    one_line_error(proc, 'too few to split', 'left as it was')
    (tmp_path / 'latin1.txt').write_bytes('caf\xe9 au lait\n'.encode('latin-1') * 10)
    proc = run_script('data/shakespeare_char/prepare.py', '--input', str(tmp_path / 'latin1.txt'), '--out_dir',
                      str(dataset), check=False)
    one_line_error(proc, 'not UTF-8')
    assert snapshot(dataset) == before


def test_a_mix_of_two_prepares_is_refused(dataset, tmp_path):
    # what an interrupted prepare leaves: a new train.bin beside the old val.bin and vocabulary
    other = tmp_path / 'other'
    (tmp_path / 'in.txt').write_text('abcdefghijklmnopqrstuvwxyz ' * 500)
    run_script('data/shakespeare_char/prepare.py', '--input', str(tmp_path / 'in.txt'), '--out_dir', str(other))
    shutil.copy(other / 'train.bin', dataset / 'train.bin')
    proc = train(dataset, tmp_path / 'out', '--max_iters=1', check=False)
    one_line_error(proc, 'train.bin changed since the prepare that wrote meta.json', 'mixes two prepares',
                   'prepare it again')
    os.remove(dataset / 'meta.pkl')
    proc = train(dataset, tmp_path / 'out', '--max_iters=1', check=False)
    one_line_error(proc, 'meta.pkl is missing')


def test_a_killed_prepare_leaves_the_old_dataset_as_it_was(dataset, tmp_path):
    # the new dataset is written in a staging folder and swapped in whole at the end: killed while writing, the
    # prepare leaves the old one unchanged and usable, and the next prepare starts over
    before = snapshot(dataset)
    big = tmp_path / 'big.txt'
    big.write_text('the quick brown fox jumps over the lazy dog\n' * 400_000)  # 18 MB: seconds to prepare
    proc = popen_script('data/shakespeare_char/prepare.py', '--input', str(big), '--out_dir', str(dataset))
    deadline = time.time() + 60
    while not any((dataset / '.prepare.new').glob('*')) and time.time() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, 'the prepare finished before it could be killed'
    assert snapshot(dataset) == before
    train(dataset, tmp_path / 'out', '--max_iters=1')
    run_script('data/shakespeare_char/prepare.py', '--input', str(big), '--out_dir', str(dataset))
    assert snapshot(dataset) != before and not (dataset / '.prepare.new').exists()


# -----------------------------------------------------------------------------
# temporary files of dead runs do not pile up

def test_temporary_files_of_a_killed_run_are_removed(dataset, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    pid = dead_pid()
    (out / f'ckpt.pt.tmp{pid}').write_bytes(b'half a checkpoint')
    (dataset / f'train.bin.tmp{pid}').write_bytes(b'half a token file')
    live = out / f'ckpt.pt.tmp{os.getpid()}'  # a live process's write in progress is left alone
    live.write_bytes(b'in progress')
    train(dataset, out, '--max_iters=1', '--eval_interval=1')
    assert sorted(os.listdir(out)) == sorted(['ckpt.pt', 'log.jsonl', live.name])
    run_script('data/shakespeare_char/prepare.py', '--input', str(dataset / 'input.txt'), '--out_dir', str(dataset))
    assert not [f for f in os.listdir(dataset) if '.tmp' in f]


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(dataset, tmp_path):
    out = tmp_path / 'out'
    train(dataset, out, '--max_iters=1', '--eval_interval=1')
    before = snapshot(out)['ckpt.pt']
    # train.py with torch.save failing the way a full disk makes it fail
    code = ("import errno, os, runpy, sys, torch\n"
            "def full(obj, f, *a, **k):\n"
            "    open(f, 'wb').write(b'partial')\n"
            "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f)\n"
            "torch.save = full\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = run_code(code, os.path.join(REPO, 'train.py'), *TINY, f'--dataset={dataset}', f'--out_dir={out}',
                    '--max_iters=2', '--eval_interval=1', '--init_from=resume', check=False)
    one_line_error(proc, 'the disk is full writing', 'ckpt.pt: free some space')
    assert snapshot(out)['ckpt.pt'] == before and sorted(os.listdir(out)) == ['ckpt.pt', 'log.jsonl']


# -----------------------------------------------------------------------------
# values that used to give wrong answers with exit code 0, or a traceback

@pytest.mark.parametrize('args, fragments', [
    (['--gradient_accumulation_steps=0'], ['gradient_accumulation_steps=0', 'greater than 0']),
    (['--block_size=0'], ['block_size=0', 'greater than 0']),
    (['--batch_size=-1'], ['batch_size=-1']),
    (['--eval_interval=0'], ['eval_interval=0']),
    (['--log_interval=0'], ['log_interval=0']),
    (['--n_head=0'], ['n_head=0']),
    (['--learning_rate=-0.1'], ['learning_rate=-0.1', '0 or more']),
    (['--n_embd=30', '--n_head=4'], ['n_embd=30 is not divisible by n_head=4']),
    (['--dropout=1.0'], ['dropout=1.0', '[0, 1)']),
    (['--min_lr=0.1'], ['min_lr=0.1 is above learning_rate']),
])
def test_train_refuses_out_of_range_values(char_data, tmp_path, args, fragments):
    proc = train(char_data, tmp_path / 'out', '--max_iters=1', *args, check=False)
    one_line_error(proc, *fragments)
    assert not (tmp_path / 'out').exists()  # refused before any work


@pytest.mark.parametrize('args, fragments', [
    (['--temperature=-1'], ['temperature=-1', '0 or more']),
    (['--top_k=0'], ['top_k=0']),
    (['--top_p=1.5'], ['top_p=1.5', '(0, 1]']),
    (['--top_p=0.0'], ['top_p=0.0']),
])
def test_sample_refuses_out_of_range_values(tmp_path, args, fragments):
    one_line_error(run_script('sample.py', f'--out_dir={tmp_path}', *args, check=False), *fragments)


def test_bench_refuses_zero_steps():
    one_line_error(run_script('bench.py', '--benchmark_steps=0', check=False), 'benchmark_steps=0')


def test_config_file_errors_are_one_line(tmp_path):
    (tmp_path / 'syntax.py').write_text('batch_size = = 3\n')
    one_line_error(run_script('train.py', str(tmp_path / 'syntax.py'), check=False), 'syntax.py, line 1')
    (tmp_path / 'runtime.py').write_text('batch_size = 1 // 0\n')
    one_line_error(run_script('train.py', str(tmp_path / 'runtime.py'), check=False), 'runtime.py failed when run',
                   'ZeroDivisionError')


def test_out_dir_that_is_a_file(char_data, tmp_path):
    (tmp_path / 'out').write_text('my notes')
    one_line_error(train(char_data, tmp_path / 'out', '--max_iters=1', check=False), 'is a file')
    assert (tmp_path / 'out').read_text() == 'my notes'


def test_character_checkpoint_carries_its_vocabulary(dataset, tmp_path):
    out = tmp_path / 'out'
    train(dataset, out, '--max_iters=1', '--eval_interval=1')
    moved = tmp_path / 'moved'
    os.rename(dataset, moved)  # the dataset folder is gone: sampling must not fall back to GPT-2's BPE
    proc = run_script('sample.py', f'--out_dir={out}', '--start=to', '--num_samples=1', '--max_new_tokens=20',
                      '--device=cpu')
    sample = proc.stdout.split('Loading meta from the checkpoint...\n')[1].split('---------------')[0]
    assert sample.startswith('to') and set(sample) <= set('to bernhaqusiwlf\n') and len(sample) == 2 + 20 + 1
    # a checkpoint from before (no vocabulary inside) whose dataset moved: an error, not BPE nonsense
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    del ckpt['vocab']
    torch.save(ckpt, out / 'ckpt.pt')
    proc = run_script('sample.py', f'--out_dir={out}', '--device=cpu', check=False)
    one_line_error(proc, 'vocabulary of 16 characters', 'neither the checkpoint nor its dataset')


def test_export_over_an_existing_folder_is_refused(dataset, tmp_path):
    out = tmp_path / 'out'
    train(dataset, out, '--max_iters=1', '--eval_interval=1')
    dest = tmp_path / 'hf'
    dest.mkdir()
    (dest / 'vocab.json').write_text('{"stale": 0}')
    before = snapshot(dest)
    one_line_error(run_script('export_hf.py', f'--out_dir={out}', f'--dest={dest}', check=False),
                   'already exists and is not an empty folder')
    assert snapshot(dest) == before


def test_hellaswag_on_an_empty_file(tmp_path):
    (tmp_path / 'empty.jsonl').write_text('\n')
    one_line_error(run_script('hellaswag.py', f'--data_file={tmp_path / "empty.jsonl"}', check=False),
                   'holds no HellaSwag records')


def test_wandb_log_without_wandb(char_data, tmp_path):
    import importlib.util
    if importlib.util.find_spec('wandb') is not None:
        pytest.skip('wandb is installed here, so its absence cannot be tested')
    proc = train(char_data, tmp_path / 'out', '--max_iters=1', '--wandb_log=True', check=False)
    one_line_error(proc, 'wandb package is not installed', 'pip install wandb')


def test_ctrl_c_is_a_clean_exit(char_data, tmp_path):
    proc = popen_script('train.py', *TINY, f'--dataset={char_data}', f'--out_dir={tmp_path / "out"}',
                        '--max_iters=100000', '--eval_interval=100000')
    for line in proc.stdout:
        if line.startswith('iter 2:'):
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and 'Traceback' not in stderr and 'interrupted' in stderr, stderr[-2000:]


def test_prepare_errors_are_one_line_too(tmp_path):
    (tmp_path / 'out').write_text('my notes')
    (tmp_path / 'in.txt').write_text('some text to prepare\n' * 10)
    proc = run_script('data/shakespeare_char/prepare.py', '--input', str(tmp_path / 'in.txt'), '--out_dir',
                      str(tmp_path / 'out'), check=False)
    one_line_error(proc, f"out_dir={tmp_path / 'out'} is a file, not a folder: choose another out_dir")
    assert (tmp_path / 'out').read_text() == 'my notes'
