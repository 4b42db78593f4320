"""
Every command the README shows runs. Each line of its ```sh blocks (split at &&; `pip install` and the test command left out) is parsed
by its script's configurator, so a key or value the script would refuse fails here; then every line not marked
(GPU) or (downloads) runs for real on the CPU, in the order the README gives, sized down by the arguments this test
appends (later --key=value win) and pointed at a small dataset and folders of its own.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, run_script

with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    README = f.read()

# the sizes a CPU runs every command at
CPU_SIZE = {
    'train.py': ['--device=cpu', '--compile=False', '--max_iters=20', '--lr_decay_iters=20', '--eval_interval=10',
                 '--eval_iters=2', '--log_interval=5', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32',
                 '--batch_size=4', '--warmup_iters=2'],
    'sample.py': ['--device=cpu', '--max_new_tokens=20'],
    'perplexity.py': ['--device=cpu', '--max_tokens=2000'],
    # a model smaller than bench.py's own CPU shape: what is checked is that each command runs, not its figures
    'bench.py': ['--device=cpu', '--burnin_steps=1', '--benchmark_steps=1', '--n_layer=1', '--n_head=2', '--n_embd=32',
                 '--block_size=32', '--vocab_size=512'],
}
CONFIGURED = ('train.py', 'sample.py', 'bench.py', 'hellaswag.py', 'perplexity.py', 'export_hf.py')


def readme_commands() -> list[tuple[str, bool]]:
    """(command, runs here) for every command in the README's sh blocks."""
    commands = []
    for block in re.findall(r'```sh\n(.*?)```', README, re.S):
        for line in block.splitlines():
            marked = bool(re.search(r'#.*\((GPU|downloads)\)', line))
            line = line.split(' #')[0].strip()
            commands += [(part.strip(), not marked) for part in line.split('&&')
                         if part.strip() and not part.strip().startswith(('pip ', 'python -m pytest'))]
    return commands


def script_and_args(command: str) -> tuple[str, list[str], list[str]]:
    """(script, the launcher before it, its arguments) of `python x.py ...` or `torchrun ... x.py ...`."""
    words = shlex.split(command)
    at = next(i for i, w in enumerate(words) if w.endswith('.py'))
    return words[at], words[:at], words[at + 1:]


def test_the_readme_shows_commands_of_every_kind():
    commands = readme_commands()
    scripts = {script_and_args(c)[0] for c, _ in commands}
    assert {'train.py', 'sample.py', 'bench.py', 'data/shakespeare_char/prepare.py'} <= scripts
    assert sum(runs for _, runs in commands) >= 10 and all(c.split()[0] in ('python', 'torchrun') for c, _ in commands)


@pytest.mark.parametrize('command', [c for c, _ in readme_commands() if script_and_args(c)[0] in CONFIGURED])
def test_every_readme_command_passes_its_scripts_configurator(command, monkeypatch):
    """What the configurator would refuse fails here, GPU-only lines included (a --n_embd without its --n_head)."""
    import importlib
    import itertools
    from nanogpt.sweep import split_sweep
    from configurator import configure
    script, _, args = script_and_args(command)
    module = importlib.import_module(script[:-3])
    monkeypatch.chdir(REPO)  # config files are named from the repository root
    fixed, swept = split_sweep(args, module.SWEEPABLE) if script == 'bench.py' else (args, {})
    for values in itertools.product(*swept.values()):  # bench.py: every setting of a sweep
        setting = [f'--{k}={v}' for k, v in zip(swept, values)]
        configure(module.defaults, fixed + setting, getattr(module, 'RANGES', None), verbose=False)


@pytest.mark.slow
def test_every_readme_command_runs_on_a_cpu(tmp_path):
    text = tmp_path / 'input.txt'
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nO Romeo, Romeo!\n" * 300)
    data, out = tmp_path / 'data', tmp_path / 'out-shakespeare-char'
    places = {'out-shakespeare-char': str(out), '--dataset=shakespeare_char': f'--dataset={data}',
              'my-gpt2': str(tmp_path / 'my-gpt2'), 'bench.json': str(tmp_path / 'bench.json')}
    ran = []
    for command, runs in readme_commands():
        if not runs:
            continue
        for placeholder, value in places.items():
            command = command.replace(placeholder, value)
        script, launcher, args = script_and_args(command)
        assert launcher == ['python'], command  # what runs here runs in one process
        args += CPU_SIZE.get(script, [])
        if script == 'data/shakespeare_char/prepare.py':
            args += ['--input', str(text), '--out_dir', str(data)]
        if script == 'train.py':  # into the quick start's folder, unless the command names its own
            args += [f'--dataset={data}'] + [f'--out_dir={out}'] * (not any(a.startswith('--out_dir=') for a in args))
        env = dict(os.environ, MPLBACKEND='Agg', CUDA_VISIBLE_DEVICES='')
        proc = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        ran.append(script)
    assert ran[:3] == ['data/shakespeare_char/prepare.py', 'train.py', 'sample.py']  # the quick start, in order
    assert (out / 'ckpt.pt').exists() and (tmp_path / 'my-gpt2' / 'model.safetensors').exists()
    assert run_script('sample.py', f'--out_dir={out}', '--help').stdout.count('--') > 10
