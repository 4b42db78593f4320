import os
import re
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def run_script(*args, cwd=REPO, env=None, check=True, timeout=600):
    """Run `python <args>` from the repository root; return the CompletedProcess (stdout and stderr as text)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    script = os.path.join(REPO, args[0])  # scripts are named relative to the repository
    proc = subprocess.run([sys.executable, script, *args[1:]], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


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
