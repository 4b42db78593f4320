"""
`python script.py args` without paying for the interpreter's start: a fork server that imported torch once forks a
child per run, and the child runs the script as `__main__`. The child is a real process, so a run keeps what a test
relies on (its own exit code and output, signal handlers, globals, process group, dynamo cache, resource limits),
and nothing a script changes reaches the next run or the test process. What differs from a new interpreter is only
that the modules below were imported before the run's environment was set: they read nothing from it at import.

Where the interpreter itself is what is tested (signals, torchrun, the README's commands), tests start a real one.
"""
import atexit
import json
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import threading

# imported once by the server: the bulk of a script's start (torch alone is 1.5 s), and none reads an option of ours
# from the environment at import (the project's own modules do, e.g. TORCHELASTIC_RUN_ID, so they are not here;
# nor torch._inductor, which reads CXX at import)
PRELOAD = ['numpy', 'torch', 'torch.distributed.fsdp', 'torch.distributed.tensor', 'torch.nn.parallel', 'tqdm',
           'tiktoken']

_context = None
_sys_path = None  # what a new interpreter has on sys.path after the script's own folder


def _start():
    global _context, _sys_path
    if _context is None:
        _sys_path = json.loads(subprocess.check_output([sys.executable, '-c', 'import sys, json; print(json.dumps(sys.path[1:]))']))
        _context = multiprocessing.get_context('forkserver')
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(script: str, args: list, cwd: str, env: dict, sys_path: list, out_path: str, err_path: str):
    """Runs in the forked process: becomes `python script args` in cwd with env, output to the two files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out_path), (2, err_path)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_APPEND), fd)
    sys.stdout = open(1, 'w', buffering=1, encoding='utf-8', closefd=False)
    sys.stderr = open(2, 'w', buffering=1, encoding='utf-8', errors='backslashreplace', closefd=False)
    sys.stdin = open(os.devnull)
    sys.argv = [script, *args]
    sys.path[:] = [os.path.dirname(os.path.abspath(script)), *sys_path]
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:  # what the interpreter makes of sys.exit(code)
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())  # the scripts' one-line error hook, as the interpreter would call it
        code = 1
    threading._shutdown()  # as at an interpreter's exit: wait for the threads that are not daemons, then atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code & 0xFF)  # sys.exit(-1) is 255, as a shell sees it


def run(script: str, args: list, cwd: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """`python script args` in cwd with env (the whole environment), as subprocess.run with capture_output does."""
    context = _start()
    with tempfile.TemporaryDirectory() as folder:
        out_path, err_path = os.path.join(folder, 'out'), os.path.join(folder, 'err')
        open(out_path, 'w').close()
        open(err_path, 'w').close()
        child = context.Process(target=_child, args=(script, list(args), cwd, env, _sys_path, out_path, err_path))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired([script, *args], timeout)
        with open(out_path, encoding='utf-8', errors='replace') as f:
            stdout = f.read()
        with open(err_path, encoding='utf-8', errors='replace') as f:
            stderr = f.read()
    return subprocess.CompletedProcess([sys.executable, script, *args], child.exitcode, stdout, stderr)
