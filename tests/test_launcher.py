"""
tests/launcher.py, on which most of the suite runs its scripts: a forked run sees what a new interpreter sees (argv,
folder, environment, sys.path, __main__), ends with the code an interpreter ends with, keeps nothing from the run
before it, and the forked ranks of run_ranks and the background runs of Popen behave as torchrun's and subprocess's.
"""
import json
import os
import signal
import sys

import launcher
import pytest
from conftest import REPO, popen_script, run_ranks, run_script

VIEW = """import json, os, sys
import torch, train_view_state  # a module the run changes: the next run must find it as it was
train_view_state.runs.append(1)
print(json.dumps({'argv': sys.argv, 'cwd': os.getcwd(), 'path': sys.path, 'name': __name__,
                  'env': os.environ.get('LAUNCHER_TEST'), 'runs': len(train_view_state.runs),
                  'threads': torch.get_num_threads(), 'stdin': sys.stdin.read(), 'has_path': 'PATH' in os.environ,
                  'streams': [(s.line_buffering, s.write_through) for s in (sys.stdout, sys.stderr)],
                  'start_method': __import__('multiprocessing').get_start_method()}))
"""


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / 'train_view_state.py').write_text('runs = []\n')
    (tmp_path / 'view.py').write_text(VIEW)
    return tmp_path


def test_a_forked_run_sees_what_a_new_interpreter_sees(scripts, tmp_path):
    env = {'LAUNCHER_TEST': 'set', 'OMP_NUM_THREADS': '1'}
    fresh = run_script(str(scripts / 'view.py'), 'a', '--b=1', cwd=tmp_path, env=env, fresh=True)
    forked = [run_script(str(scripts / 'view.py'), 'a', '--b=1', cwd=tmp_path, env=env) for _ in range(2)]
    assert json.loads(forked[0].stdout) == json.loads(forked[1].stdout) == json.loads(fresh.stdout)
    view = json.loads(fresh.stdout)
    assert view['runs'] == 1 and view['env'] == 'set' and view['threads'] == 1 and view['name'] == '__main__'
    assert view['path'][0] == str(scripts) and view['cwd'] == str(tmp_path) and view['stdin'] == ''
    assert view['has_path']
    # the run's environment is the whole of it: a variable the server started with is gone where the run lacks it
    env = {k: v for k, v in os.environ.items() if k != 'PATH'}
    assert not json.loads(launcher.run(str(scripts / 'view.py'), [], tmp_path, env, timeout=60).stdout)['has_path']
    assert json.loads(run_script(str(scripts / 'view.py')).stdout)['env'] is None


@pytest.mark.parametrize('code, returncode, stderr', [
    ('pass', 0, ''),
    ('raise SystemExit(3)', 3, ''),
    ('import sys; sys.exit(-1)', 255, ''),
    ('import sys; sys.exit("bye")', 1, 'bye'),
    ('raise ValueError("boom")', 1, 'ValueError: boom'),
    ('raise KeyboardInterrupt', -signal.SIGINT, 'KeyboardInterrupt'),
    # the scripts' hook: one line, and its own code (130 for Ctrl-C)
    ('from nanogpt.errors import one_line_errors; one_line_errors(); raise KeyboardInterrupt', 130, 'interrupted'),
    ('from nanogpt.errors import one_line_errors; one_line_errors(); open("/nonexistent/x")', 1,
     'error: No such file or directory'),
    ('import atexit; atexit.register(print, "at exit"); raise SystemExit(2)', 2, ''),
])
def test_a_forked_run_ends_as_an_interpreter_ends(tmp_path, code, returncode, stderr):
    (tmp_path / 'end.py').write_text(code)
    proc = run_script(str(tmp_path / 'end.py'), env={'PYTHONPATH': REPO}, check=False)
    assert proc.returncode == returncode and stderr in proc.stderr, proc.stderr
    if 'atexit' in code:
        assert proc.stdout == 'at exit\n'


def test_forked_ranks_are_started_as_torchrun_starts_them_and_end_together(tmp_path):
    (tmp_path / 'rank.py').write_text(
        "import os, sys, time, torch\n"
        "torch.distributed.init_process_group('gloo')\n"
        "t = torch.tensor([float(os.environ['RANK'])])\n"
        "torch.distributed.all_reduce(t)\n"
        "sys.stdout.write(f\"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: {t.item()}, "
        "{torch.get_num_threads()} thread\\n\")\n"
        "if len(sys.argv) > 1 and os.environ['RANK'] == '1':\n"
        "    raise SystemExit(3)\n"
        "if len(sys.argv) > 1:\n"
        "    time.sleep(600)  # ended by the launcher once rank 1 failed, as torchrun ends the others\n")
    proc = run_ranks(str(tmp_path / 'rank.py'), nproc=3)
    assert sorted(proc.stdout.splitlines()) == [f'rank {r} of 3: 3.0, 1 thread' for r in range(3)]
    proc = run_ranks(str(tmp_path / 'rank.py'), 'fail', nproc=2, check=False, timeout=120)
    assert proc.returncode == 1 and 'rank 0 of 2' in proc.stdout


def test_a_background_run_is_signalled_and_piped_as_a_subprocess(tmp_path):
    (tmp_path / 'wait.py').write_text("import time\nprint('ready', flush=True)\ntime.sleep(600)\n")
    proc = popen_script(str(tmp_path / 'wait.py'))
    assert proc.stdout.readline() == 'ready\n' and proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    (tmp_path / 'talk.py').write_text("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(4)\n")
    proc = popen_script(str(tmp_path / 'talk.py'))
    assert proc.communicate(timeout=60) == ('out\n', 'err\n') and proc.returncode == 4


def test_the_debug_switch_is_off_for_every_way_of_saying_off(monkeypatch):
    from nanogpt import errors
    for value in ('0', 'false', 'No', 'off', ''):
        monkeypatch.setattr(sys, 'excepthook', sys.__excepthook__)
        monkeypatch.setenv('NANOGPT_DEBUG', value)
        errors.one_line_errors()
        assert sys.excepthook is errors._one_line_errors, value
    monkeypatch.setattr(sys, 'excepthook', sys.__excepthook__)
    monkeypatch.setenv('NANOGPT_DEBUG', '1')
    errors.one_line_errors()
    assert sys.excepthook is sys.__excepthook__


def test_the_hook_says_what_to_do_about_too_many_open_files_and_a_vanished_cwd(tmp_path, capfd, monkeypatch):
    import errno

    from nanogpt import errors
    with pytest.raises(SystemExit):
        errors._one_line_errors(OSError, OSError(errno.EMFILE, 'Too many open files', 'train_001020.bin'), None)
    assert 'too many files open at once (train_001020.bin): raise the limit (ulimit -n' in capfd.readouterr().err
    gone = tmp_path / 'gone'
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(SystemExit):
        errors._one_line_errors(FileNotFoundError, FileNotFoundError(2, 'No such file or directory'), None)
    assert 'the current folder no longer exists' in capfd.readouterr().err
