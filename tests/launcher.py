"""
`python script.py args` without paying for the interpreter's start: a fork server that imported torch once forks a
child per run, and the child runs the script as `__main__`. The child is a real process, so a run keeps what a test
relies on (its own exit code and output, signals and their handlers, globals, process group, dynamo cache, resource
limits), and nothing a script changes reaches the next run or the test process. What differs from a new interpreter:
- the modules in PRELOAD were imported before the run's environment was set: what they read from it at import
  (TORCH_LOGS, TQDM_*, inductor's settings such as CXX, OpenBLAS's thread count) is the test process's, so a test
  that sets one of those starts a new interpreter; torch's thread count follows OMP_NUM_THREADS;
- Python's own start-up settings (PYTHONHASHSEED: every run shares the server's string hashing; PYTHONWARNINGS) are
  the server's, PYTHONUNBUFFERED is honoured;
- after atexit the process ends without the interpreter's finalization, where gloo's exit race lives: that is
  tested under torchrun itself (test_end_distributed_leaves_before_interpreter_shutdown).
run() stands in for subprocess.run, run_ranks() for torchrun, Popen for subprocess.Popen: tests/test_launcher.py holds
each to what it stands in for.

Where a new interpreter is what is tested (torchrun itself and its restarts, the README's commands, Ctrl-C into a
closed pipe, the C++ compiler torch reads as it starts), tests start one.
"""
import atexit
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

# imported once by the server: the bulk of a script's start (torch alone is 1.5 s; torch._dynamo, which creating an
# optimizer imports, 0.7 s). The project's own modules read the environment at import (TORCHELASTIC_RUN_ID), so they
# are not here, nor huggingface_hub (HF_HUB_OFFLINE). torch._dynamo brings torch._inductor's config, which reads CXX
# at import: a test that changes the compiler runs a new interpreter.
PRELOAD = ['numpy', 'torch', 'torch._dynamo', 'torch.distributed.fsdp', 'torch.distributed.tensor', 'torch.nn.parallel',
           'tqdm', 'tiktoken']

_context = None
_sys_path = None  # what a new interpreter has on sys.path after the script's own folder


def _start():
    global _context, _sys_path
    if _context is None:
        without = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}  # a run's own is added in _child
        printed = subprocess.check_output([sys.executable, '-c', 'import sys, json; print(json.dumps(sys.path[1:]))'],
                                          env=without)
        _sys_path = json.loads(printed)
        _context = multiprocessing.get_context('forkserver')
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(script: str, args: list, cwd: str, env: dict, sys_path: list, out, err):
    """Runs in the forked process: becomes `python script args` in cwd with env, its output to out and err."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, target in ((1, out), (2, err)):  # a file's path, or the writing end of a pipe (Popen)
        os.dup2(target.fileno() if hasattr(target, 'fileno') else os.open(target, os.O_WRONLY | os.O_APPEND), fd)
    # as an interpreter's streams into a file or pipe: stdout buffered, stderr by lines, both written through with -u
    unbuffered = bool(env.get('PYTHONUNBUFFERED'))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, 'w', closefd=False), encoding='utf-8', write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, 'w', closefd=False), encoding='utf-8', errors='backslashreplace',
                                  line_buffering=not unbuffered, write_through=unbuffered)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # stdin=DEVNULL, for the script and what it starts
    sys.stdin = open(0, closefd=False)
    sys.argv = [script, *args]
    sys.path[:] = [os.path.dirname(os.path.abspath(script)),
                   *(os.path.abspath(p) for p in env.get('PYTHONPATH', '').split(os.pathsep) if p), *sys_path]
    if 'OMP_NUM_THREADS' in env:  # read by torch as it starts, which here was before the run's environment
        sys.modules['torch'].set_num_threads(int(env['OMP_NUM_THREADS']))
    multiprocessing.set_start_method(None, force=True)  # a Pool in the script starts as in a new interpreter's
    interrupted = False
    try:
        try:
            runpy.run_path(script, run_name='__main__')
            code = 0
        except SystemExit:
            raise
        except BaseException as e:  # as the interpreter does: the hook (the scripts' may sys.exit with a code)
            interrupted = isinstance(e, KeyboardInterrupt)
            sys.excepthook(*sys.exc_info())
            code = 1
    except SystemExit as e:  # what the interpreter makes of sys.exit(code)
        interrupted = False
        code = _exit_code(e.code)
    threading._shutdown()  # as at an interpreter's exit: wait for the threads that are not daemons, then atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader went away: the interpreter's code for a failed flush at exit
            code = code or 120
    if interrupted:  # an interpreter ended by an uncaught KeyboardInterrupt dies of SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)  # sys.exit(-1) is 255, as a shell sees it


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _spawn(script: str, args, cwd, env: dict, out, err):
    context = _start()
    child = context.Process(target=_child, args=(script, list(args), str(cwd), env, _sys_path, out, err))
    child.start()
    return child


def _result(argv: list, code: int, folder: str) -> subprocess.CompletedProcess:
    outputs = []
    for name in ('out', 'err'):
        with open(os.path.join(folder, name), encoding='utf-8', errors='replace') as f:
            outputs.append(f.read())
    return subprocess.CompletedProcess(argv, code, *outputs)


def _files(folder: str) -> tuple[str, str]:
    paths = os.path.join(folder, 'out'), os.path.join(folder, 'err')
    for path in paths:
        open(path, 'w').close()
    return paths


def run(script: str, args, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """`python script args` in cwd with env (the whole environment), as subprocess.run with capture_output does."""
    with tempfile.TemporaryDirectory() as folder:
        child = _spawn(script, args, cwd, env, *_files(folder))
        try:
            child.join(timeout)
            if child.exitcode is None:
                raise subprocess.TimeoutExpired([script, *args], timeout)
            return _result([sys.executable, script, *args], child.exitcode, folder)
        finally:  # as subprocess.run: a run that outlives the call (a timeout, an interrupted test) is killed
            _end([child])


def _end(children: list):
    for child in children:
        if child.exitcode is None:
            child.kill()
            child.join()


def free_port() -> int:
    """A TCP port free on this machine now (rank 0's rendezvous, a two-node test's master)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_ranks(script: str, args, nproc: int, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=nproc script args` with its ranks forked: each rank gets the variables
    torchrun gives its workers, their output goes to one stdout and one stderr as torchrun's workers' does, and where
    a rank fails the others are ended and the code is 1, as torchrun's. What torchrun's agent does beyond that
    (restarts, its rendezvous store, its own messages) is tested through torchrun itself."""
    port = free_port()
    common = dict(env, WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK='0', ROLE_RANK='0',
                  ROLE_WORLD_SIZE=str(nproc), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                  TORCHELASTIC_RUN_ID=uuid.uuid4().hex, TORCHELASTIC_RESTART_COUNT='0', TORCHELASTIC_MAX_RESTARTS='0')
    if nproc > 1:
        common.setdefault('OMP_NUM_THREADS', '1')  # torchrun's default for several workers
    argv = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', script, *args]
    with tempfile.TemporaryDirectory() as folder:
        paths = _files(folder)
        ranks = []
        try:
            for r in range(nproc):
                ranks.append(_spawn(script, args, cwd, dict(common, RANK=str(r), LOCAL_RANK=str(r)), *paths))
            deadline = time.monotonic() + timeout
            running = list(ranks)
            while running and time.monotonic() < deadline:
                multiprocessing.connection.wait([r.sentinel for r in running], deadline - time.monotonic())
                running = [r for r in running if r.exitcode is None]
                if any(r.exitcode for r in ranks):  # one failed: torchrun ends the others, SIGTERM then SIGKILL
                    for r in running:
                        r.terminate()
                    for r in running:
                        r.join(30)
                    _end(running)
                    break
            if any(r.exitcode is None for r in ranks):
                raise subprocess.TimeoutExpired(argv, timeout)
            return _result(argv, int(any(r.exitcode for r in ranks)), folder)
        finally:
            _end(ranks)


class Popen:
    """subprocess.Popen([python, script, *args], stdout=PIPE, stderr=PIPE, text=True) with the process forked: its
    output read from .stdout and .stderr as it comes, .pid to signal, and Popen's send_signal, kill, poll, wait and
    communicate."""

    def __init__(self, script: str, args, cwd, env: dict):
        ends = [os.pipe(), os.pipe()]
        # the writing ends go to the child through the fork server, as multiprocessing hands over a Connection
        writers = [multiprocessing.connection.Connection(w, readable=False) for _, w in ends]
        self._child = _spawn(script, args, cwd, env, *writers)
        for w in writers:
            w.close()  # the child holds them now: its exit is the readers' end of file
        self.stdout, self.stderr = (open(r, encoding='utf-8', errors='replace') for r, _ in ends)
        self.pid = self._child.pid
        self.args = [sys.executable, script, *args]
        self.returncode = None  # set by poll and wait, in the test's thread (a watchdog's kill only reads it)

    def poll(self):
        if self.returncode is None:
            self.returncode = self._child.exitcode
        return self.returncode

    def send_signal(self, sig: int):
        if self.returncode is None:  # as subprocess's: a process seen to end is not signalled (its pid may be reused)
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # ended, not yet seen
                pass

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        self._child.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        outputs = {}
        readers = [threading.Thread(target=lambda k=k, f=f: outputs.__setitem__(k, f.read()), daemon=True)
                   for k, f in (('out', self.stdout), ('err', self.stderr)) if not f.closed]
        for t in readers:
            t.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in readers:
            t.join(None if deadline is None else max(deadline - time.monotonic(), 0))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        self.stdout.close()
        self.stderr.close()
        return outputs.get('out', ''), outputs.get('err', '')
