"""
Every hint a script prints names options that script takes: what its own text says (errors, notes, help), the
out-of-memory line of the error hook (built from the script's keys, which every script hands to one_line_errors),
and the lines its commonest mistakes get from the shared machinery, run for real.
"""
import importlib
import json
import os
import re

import pytest
from conftest import REPO, TINY, bpe_data, one_line_error, run_script

from nanogpt.errors import out_of_memory_advice

SCRIPTS = ['train.py', 'sample.py', 'bench.py', 'hellaswag.py', 'perplexity.py', 'export_hf.py']
# torchrun's own flags, which the scripts' docstrings show in launch commands
LAUNCHER = {'standalone', 'nproc_per_node', 'nnodes', 'node_rank', 'master_addr', 'master_port', 'max'}
# machinery only one script uses: its hints are that script's
ONLY = {'train.py': ['nanogpt/rundir.py'], 'bench.py': ['nanogpt/sweep.py']}


def keys_of(script: str) -> set[str]:
    return set(importlib.import_module(script[:-3]).defaults)


def named(text: str, script: str = '') -> set[str]:
    """The options text names, less those it names for another script ("sample.py --init_from=dest reads it")."""
    text = re.sub(r'\b(?!%s)\w+\.py(?: --\w+(?:=\S*)?)+' % re.escape(script), '', text) if script else text
    return set(re.findall(r'--(\w+)', text)) - LAUNCHER


@pytest.mark.parametrize('script', SCRIPTS)
def test_what_a_script_and_its_own_machinery_say_names_its_options(script):
    text = ''.join(open(os.path.join(REPO, f)).read() for f in [script, *ONLY.get(script, [])])
    # --help is every script's; --key=value the configurator's placeholder
    assert named(text, script) - {'help', 'key'} <= keys_of(script)


@pytest.mark.parametrize('script', SCRIPTS)
def test_the_out_of_memory_line_names_only_the_scripts_options(script):
    keys = keys_of(script)
    advice = out_of_memory_advice(keys)
    assert named(advice) <= keys, advice
    smaller = re.match(r'(?:a checkpoint already written stays; )?use a smaller ([\w, ]+?)(?:, --|$)', advice)
    assert smaller and set(re.split(r', | or ', smaller.group(1))) <= keys | {'model'}, advice
    assert ('checkpoint' in advice) == ('always_save_checkpoint' in keys)  # only train.py writes checkpoints
    if script == 'train.py':  # the line the README shows
        assert advice == ("a checkpoint already written stays; use a smaller batch_size, model or block_size, "
                          "--chunked_loss=True, or --data_parallel=fsdp on several GPUs")


@pytest.mark.parametrize('script, args', [
    ('sample.py', []), ('hellaswag.py', ['--init_from=resume']), ('perplexity.py', ['--text_file=x.txt']),
    ('export_hf.py', ['--dest=unused']), ('train.py', ['--init_from=resume', '--dataset=shakespeare_char']),
])
def test_a_missing_checkpoint_is_told_what_the_script_accepts(script, args, tmp_path):
    device = [] if script == 'export_hf.py' else ['--device=cpu']
    if script == 'hellaswag.py':  # its examples are read first
        (tmp_path / 'h.jsonl').write_text(json.dumps({'ctx': 'He', 'endings': ['a.', 'b.', 'c.', 'd.'], 'label': 0}))
        args = [*args, f'--data_file={tmp_path / "h.jsonl"}']
    proc = run_script(script, f'--out_dir={tmp_path / "typo"}', *device, *args, check=False)
    line = next(line for line in proc.stderr.splitlines() if line.startswith('error:'))
    assert 'no checkpoint at' in line or 'no train data' in line, line
    assert named(line) <= keys_of(script), line
    assert ('--init_from=gpt2' in line) == ('init_from' in keys_of(script) and 'no checkpoint' in line), line


def test_the_hellaswag_download_hint_names_the_key_of_the_script_that_reads_it(tmp_path):
    # hellaswag.py reads the file from --data_file, train.py from --hellaswag_file: the offline line names the one
    # the running script takes (a proxy that refuses every connection: offline whether or not this machine is)
    offline = {'https_proxy': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9', 'no_proxy': '', 'NO_PROXY': ''}
    bpe_data(tmp_path / 'data')  # GPT-2 BPE: HellaSwag needs it (character data is refused before any download)
    proc = run_script('train.py', *TINY, f'--dataset={tmp_path / "data"}', f'--out_dir={tmp_path / "out"}',
                      '--hellaswag_interval=1', env=offline, check=False)
    line = next(line for line in proc.stderr.splitlines() if line.startswith('error:') or 'Offline' in line)
    assert 'could not download' in proc.stderr and '--hellaswag_file=PATH' in proc.stderr, proc.stderr[-2000:]
    assert named(proc.stderr) <= keys_of('train.py'), line


def test_a_ddp_backend_torch_does_not_know_is_refused_before_any_process_starts():
    one_line_error(run_script('train.py', '--backend=bogus', check=False), "backend='bogus': use 'auto' or 'nccl'")


def test_an_unknown_pretrained_name_in_other_case_is_named():
    from nanogpt.weights import read_pretrained
    with pytest.raises(ValueError, match=r"unknown pretrained model 'GPT2' \(did you mean 'gpt2'\?\)"):
        read_pretrained('GPT2')
