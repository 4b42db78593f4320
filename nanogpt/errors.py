"""
The one-line error hook every script installs (the torch-free prepare scripts included): an error the script did not
foresee ends in one line, not a traceback. Nothing here imports torch or numpy.
"""

import errno
import os
import re
import sys


def _where(tb) -> str:
    """'file.py:line' of the innermost frame of this project's code in a traceback ('' when none is)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    where = ''
    while tb is not None:
        path = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if path.startswith(repo + os.sep) and os.sep + 'site-packages' + os.sep not in path:
            where = f"{os.path.relpath(path, repo)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def causes(e: BaseException):
    """e, then what caused it, then what caused that... (the errors torch.compile's backends wrap included)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__ or getattr(e, 'inner_exception', None)


def out_of_memory(e: BaseException):
    """The out-of-memory error in e or in what caused it (a CUDA OutOfMemoryError, an allocation the CPU allocator
    refused, a MemoryError, CUDA's libraries out of memory: cuBLAS, cuDNN, Triton, NCCL), or None."""
    words = r"can't allocate memory|out of memory|ALLOC(ATION)?_FAILED"
    return next((c for c in causes(e) if type(c).__name__ in ('OutOfMemoryError', 'MemoryError') or (
        isinstance(c, RuntimeError) and re.search(words, str(c)))), None)


def out_of_memory_advice(keys) -> str:
    """What to change when memory runs out, in the keys of the running script only: every hint names an option the
    script takes."""
    sizes = [k for k in ('batch_size',) if k in keys] + ['model'] + [k for k in ('block_size',) if k in keys]
    options = ['a smaller ' + (f"{', '.join(sizes[:-1])} or {sizes[-1]}" if len(sizes) > 1 else sizes[0])]
    options += ['--chunked_loss=True'] * ('chunked_loss' in keys)
    options += ['--data_parallel=fsdp on several GPUs'] * ('data_parallel' in keys)
    advice = f"use {', '.join(options[:-1])}, or {options[-1]}" if len(options) > 1 else f"use {options[0]}"
    return f"a checkpoint already written stays; {advice}" if 'always_save_checkpoint' in keys else advice


_options = frozenset()  # the config keys of the running script (one_line_errors): what its hints may name


def takes(key: str) -> bool:
    """Whether the running script takes --key: a hint names an option only where the script accepts it."""
    return key in _options


def _cwd_exists() -> bool:
    try:
        os.getcwd()
        return True
    except OSError:
        return False


def _one_line_errors(exc_type, exc, tb):
    """sys.excepthook of the scripts: an error the scripts did not foresee still ends in one line, not a traceback
    (NANOGPT_DEBUG=1 shows it). The line goes straight to the process's stderr: under torchrun, torch's own hook
    calls this one with sys.stderr swapped for a buffer that it would print only after this hook returned."""
    if issubclass(exc_type, KeyboardInterrupt):
        message, code = "interrupted", 130
    else:
        code = 1
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            what, fix = {errno.ENOSPC: ('the disk is full', 'free some space'),
                         errno.EDQUOT: ('the disk quota is used up', 'free some space or raise the quota'),
                         errno.EFBIG: ('the file size limit is reached', 'raise it (ulimit -f)')}[exc.errno]
            message = f"{what}{f' writing {exc.filename}' if exc.filename else ''}: {fix} and run again"
        elif isinstance(exc, OSError) and exc.errno == errno.EMFILE:
            message = f"too many files open at once{f' ({exc.filename})' if exc.filename else ''}: raise the limit " \
                      f"(ulimit -n 65536), or prepare the dataset with fewer, larger shards"
        elif isinstance(exc, FileNotFoundError) and not _cwd_exists():
            message = "the current folder no longer exists (removed or moved): cd to one that does and run again"
        elif isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.strerror}{f': {exc.filename}' if exc.filename else ''}"
        elif oom := out_of_memory(exc):
            # torch's message says how much it tried to allocate, and (CUDA) how much the device has
            tried = re.search(r"allocate ([\d.]+ ?\w+)", str(oom))
            total = re.search(r"capacity of ([\d.]+ \w+)", str(oom))
            detail = ', '.join(filter(None, [tried and f"tried to allocate {tried.group(1)}",
                                             total and f"the device has {total.group(1)}"]))
            message = f"out of memory{f' ({detail})' if detail else ''}: {out_of_memory_advice(_options)}"
        elif isinstance(exc, UnicodeDecodeError):
            message = f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}): convert it to UTF-8"
        elif 'RANK' in os.environ and any(s in str(exc) for s in ('closed by peer', 'reset by peer', 'remote worker')):
            message = f"rank {os.environ['RANK']} lost the other ranks: one of them failed, its error is above"
        elif isinstance(exc, ModuleNotFoundError) and exc.name:
            message = f"the {exc.name} package is not installed: pip install {exc.name.split('.')[0]}"
        else:  # the last resort: at least where it happened
            where = _where(tb)
            message = f"{exc_type.__name__}{f': {exc}' if str(exc) else ''}{f' (at {where})' if where else ''}" \
                      f"; this is a bug if your input looks right: please report it"
        message = f"error: {message} (NANOGPT_DEBUG=1 shows the traceback)"
    stderr = sys.__stderr__ or sys.stderr
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:  # written, not print()ed: a config file may have replaced builtins.print
        stderr.write(message + '\n')
        stderr.flush()
    except (OSError, ValueError):  # stderr closed too (a pipe whose reader died): the exit code still says it
        pass
    sys.exit(code)


class _SturdyStream:
    """A stdout or stderr whose reader may go away (`python train.py | tee log`, then tee killed by Ctrl-C): once a
    write meets the closed pipe, the stream's descriptor is pointed at /dev/null and the run goes on, so printing
    never stands between a run and its checkpoint."""

    def __init__(self, stream):
        self._stream = stream

    def _sturdy(self, method, *args):
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())  # what is still buffered goes there too
            os.close(devnull)
            return getattr(self._stream, method)(*args)

    def write(self, text):
        return self._sturdy('write', text)

    def flush(self):
        return self._sturdy('flush')

    def __getattr__(self, name):
        return getattr(self._stream, name)


def one_line_errors(keys=()):
    """From now on an uncaught exception ends the script with one line on stderr (unless NANOGPT_DEBUG is set), and
    a closed stdout or stderr does not end it. Every script calls it first thing under `if __name__ == '__main__':`,
    with its config keys, the options its hints may name."""
    global _options
    _options = frozenset(keys)
    if os.environ.get('NANOGPT_DEBUG', '0').strip().lower() in ('', '0', 'false', 'no', 'off'):
        sys.excepthook = _one_line_errors
    for name in ('stdout', 'stderr'):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _SturdyStream) and hasattr(stream, 'fileno'):
            setattr(sys, name, _SturdyStream(stream))
