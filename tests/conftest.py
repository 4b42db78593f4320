"""
What the tests share: running the scripts (run_script, train, run_ranks, ddp_train, popen_script, run_code), the tiny
training config, reading what a run left (log.jsonl records, checkpoints), the checks of a refused input, and the
fixtures (a tiny random GPT-2 in Hugging Face format, GPT-2's tokenizer, a small character dataset). Test modules
import from here only.

Scripts run in processes forked from tests/launcher.py's server, which imported torch once: a run costs what it
computes, not an interpreter's start (benchmarks/launch.py). fresh=True starts a new interpreter (or torchrun itself)
where that is what a test checks.

Tests marked slow (torchrun launches, torch.compile) are left out by `python -m pytest -m "not slow"`, a loop of a
couple of minutes while developing; CI runs them all.
"""
import hashlib
import os
import re
import subprocess
import sys
import tempfile

import launcher
import pytest
import torch
from launcher import free_port  # noqa: F401 (the tests import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a model and run small enough for a CPU to train in a few seconds
TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=8', '--gradient_accumulation_steps=1', '--eval_iters=4', '--log_interval=1',
        '--learning_rate=3e-3', '--warmup_iters=5', '--min_lr=3e-4', '--wandb_log=False']


def after_meta(stdout: str) -> str:
    """What sample.py printed after naming where its character vocabulary came from: the samples."""
    return re.split(r'Loading meta from .*\.\.\.\n', stdout, maxsplit=1)[1]


def watchdog(proc, seconds: float = 300):
    """Kill proc after seconds, so a test reading its output line by line cannot hang the suite."""
    import threading
    timer = threading.Timer(seconds, proc.kill)
    timer.daemon = True
    timer.start()
    return timer


def environment(env: dict | None) -> dict:
    """A run's whole environment: this process's, unbuffered output, and env on top."""
    return dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))


def checked(proc, check: bool, what: str):
    if check and proc.returncode != 0:
        raise AssertionError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_script(*args, cwd=REPO, env=None, check=True, timeout=600, fresh=False):
    """Run `python <args>` from the repository root; return the CompletedProcess (stdout and stderr as text).

    The script runs in a process forked from tests/launcher.py's server, which imported torch once; fresh=True starts
    a new interpreter instead, where the interpreter itself is what a test checks."""
    full_env = environment(env)
    script = os.path.join(REPO, args[0])  # scripts are named relative to the repository
    if fresh:
        proc = subprocess.run([sys.executable, script, *args[1:]], cwd=cwd, env=full_env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    else:
        proc = launcher.run(script, args[1:], cwd=str(cwd), env=full_env, timeout=timeout)
    return checked(proc, check, ' '.join(args))


def popen_script(*args, env=None, fresh=False, seconds: float = 300):
    """`python <args>` from the repository root started in the background, its stdout and stderr piped (text), killed
    by a watchdog after seconds: forked as run_script's runs are, or a new interpreter with fresh=True."""
    full_env = environment(env)
    script = os.path.join(REPO, args[0])
    if fresh:
        proc = subprocess.Popen([sys.executable, script, *args[1:]], cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    else:
        proc = launcher.Popen(script, args[1:], REPO, full_env)
    watchdog(proc, seconds)
    return proc


def run_code(code: str, *args, check=True, timeout=600):
    """`python -c code args` from the repository root, forked as run_script's runs are (a wrapper that patches the
    project, then runs a script)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'code.py')
        with open(path, 'w') as f:
            f.write(code)
        return run_script(path, *args, env={'PYTHONPATH': REPO}, check=check, timeout=timeout)


def train(data, out_dir, *args, env=None, check=True, fresh=False):
    """train.py in one process, TINY, on data into out_dir."""
    return run_script('train.py', *TINY, f'--dataset={data}', f'--out_dir={out_dir}', *args, env=env, check=check,
                      fresh=fresh)


def torchrun(*args):
    return [sys.executable, '-m', 'torch.distributed.run', *args]


def ddp_train(data, out_dir, *args, nproc=2, fresh=False):
    """train.py as `torchrun --standalone --nproc_per_node=nproc` runs it, with gloo: its ranks forked by
    tests/launcher.py, or under torchrun itself with fresh=True."""
    return run_ranks('train.py', *TINY, f'--dataset={data}', f'--out_dir={out_dir}', *args, nproc=nproc, fresh=fresh)


def run_ranks(*args, nproc=2, env=None, check=True, timeout=600, fresh=False):
    """`torchrun --standalone --nproc_per_node=nproc <args>` from the repository root, its ranks forked from
    tests/launcher.py's server; fresh=True runs torchrun itself, where torchrun is what a test checks."""
    full_env = environment(env)
    if fresh:
        proc = subprocess.run(torchrun('--standalone', f'--nproc_per_node={nproc}', *args), cwd=REPO, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    else:
        proc = launcher.run_ranks(os.path.join(REPO, args[0]), args[1:], nproc, cwd=REPO, env=full_env,
                                  timeout=timeout)
    return checked(proc, check, f"{' '.join(args)} on {nproc} ranks")


def bpe_data(folder):
    """Random GPT-2 BPE token files (train and val, 3000 tokens each), enough for a tiny model to train on."""
    import numpy as np

    from nanogpt.tokenfiles import TokenWriter
    os.makedirs(folder, exist_ok=True)
    for split in ('train', 'val'):
        with TokenWriter(str(folder), split) as w:
            w.write(np.random.default_rng(0).integers(0, 50257, 3000))


def read_log(out_dir, last_run: bool = False) -> list[dict]:
    """The records of out_dir/log.jsonl, as its readers see them (a line that is no record skipped, in silence); with
    last_run, those of the latest run only (from its start record)."""
    from nanogpt import runlog
    records = runlog.read_records(os.path.join(out_dir, 'log.jsonl'), note=lambda text: None)
    if last_run:
        start = max(i for i, r in enumerate(records) if 'params' in r)
        records = records[start:]
    return records


def iter_losses(out_dir) -> dict:
    """{iter: training loss} that the latest run in out_dir logged."""
    return {r['iter']: r['loss'] for r in read_log(out_dir, last_run=True) if 'loss' in r}


def eval_losses(out_dir, key: str = 'val_loss') -> dict:
    """{iter: val loss} (or train_loss) of the evaluations of the latest run in out_dir."""
    return {r['iter']: r[key] for r in read_log(out_dir, last_run=True) if key in r}


def load_model_state(out_dir):
    return torch.load(os.path.join(out_dir, 'ckpt.pt'), map_location='cpu', weights_only=True)


def load_init_weights(char_data):
    """lm_head's weights of TINY's model before any training (char_data's 16 characters)."""
    from model import GPT, GPTConfig
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=16, bias=False)).lm_head.weight


def snapshot(folder) -> dict:
    """name -> sha256 of every file in folder: compared before and after a run that must change nothing (a prepare's
    lock and staging folder, .prepare.*, aside)."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(os.listdir(folder))
            if not name.startswith('.prepare.')}


def one_line_error(proc, *fragments):
    """A refused input: a non-zero exit, no traceback, one `error: ...` line on stderr holding each fragment."""
    assert proc.returncode != 0, proc.stdout[-1000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope='session')
def hf_gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 saved in Hugging Face format, with the real GPT-2 vocabulary size."""
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, vocab_size=50257)
    model = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp('hf_gpt2')
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope='session')
def gpt2_tokenizer():
    """tiktoken's GPT-2 encoding: from TIKTOKEN_CACHE_DIR offline, else downloaded; skipped when neither works."""
    tiktoken = pytest.importorskip('tiktoken')
    try:
        return tiktoken.get_encoding('gpt2')
    except Exception as e:  # no cache and no network
        pytest.skip(f"GPT-2 BPE files unavailable (set TIKTOKEN_CACHE_DIR or go online): {e}")


@pytest.fixture(scope='session')
def char_data(tmp_path_factory):
    """A small character-level dataset (16 characters): a repetitive text a model learns in a few dozen steps."""
    import numpy as np
    d = tmp_path_factory.mktemp('chardata')
    rng = np.random.default_rng(0)
    words = ['to be', 'or not', 'that is', 'the question', 'whether', 'tis nobler']
    text = ' '.join(rng.choice(words, 20000)) + '\n'
    (d / 'input.txt').write_text(text)
    run_script('data/shakespeare_char/prepare.py', '--input', str(d / 'input.txt'), '--out_dir', str(d))
    return str(d)
