"""
What a test pays to run a script: a new interpreter (`python script.py`, what the suite did for every run) against a
process forked from tests/launcher.py's server, which imported torch once. Alternates the two, so both see the same
load, and prints the median wall time of each for a refused run (an unknown key: start-up only) and a tiny training
run (2 layers, 32 wide, 2 iterations, a checkpoint written).

    python benchmarks/launch.py [--repeats=5]
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))
import launcher  # noqa: E402

TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=8', '--eval_iters=4', '--max_iters=2', '--eval_interval=2']


def fresh(script, args):
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True)


def forked(script, args):
    return launcher.run(script, args, REPO, dict(os.environ), timeout=600)


def main(repeats: int):
    folder = tempfile.mkdtemp()
    text = os.path.join(folder, 'input.txt')
    with open(text, 'w') as f:
        f.write('to be or not to be, that is the question\n' * 2000)
    data = os.path.join(folder, 'data')
    fresh(os.path.join(REPO, 'data/shakespeare_char/prepare.py'), ['--input', text, '--out_dir', data])
    t0 = time.time()
    forked(os.path.join(REPO, 'train.py'), ['--bogus=1'])
    print(f"the fork server's start (once per test session): {time.time() - t0:.2f} s")
    runs = {'refused (--bogus=1)': ['--bogus=1'], 'tiny training, 2 iterations': [*TINY, f'--dataset={data}']}
    print(f"{'run':<30} {'new interpreter':>16} {'forked':>8} {'ratio':>6}")
    for name, args in runs.items():
        times = {'fresh': [], 'forked': []}
        for i in range(repeats):
            for kind, launch in (('fresh', fresh), ('forked', forked)):
                out = os.path.join(folder, f'out-{kind}-{i}')
                t0 = time.time()
                proc = launch(os.path.join(REPO, 'train.py'), [*args, f'--out_dir={out}'])
                times[kind].append(time.time() - t0)
                assert (proc.returncode == 0) == ('--bogus=1' not in args), proc.stderr[-2000:]
        a, b = statistics.median(times['fresh']), statistics.median(times['forked'])
        print(f"{name:<30} {a:>14.2f} s {b:>6.2f} s {a / b:>5.0f}x")
    shutil.rmtree(folder)


if __name__ == '__main__':
    repeats = next((int(a.split('=', 1)[1]) for a in sys.argv[1:] if a.startswith('--repeats=')), 5)
    main(repeats)
