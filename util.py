"""
Helpers every script uses, the torch-free prepare scripts included: the one-line error hook, writing a file
atomically, and downloading one. Nothing here imports torch, numpy or data/.
"""

import errno
import glob
import os
import sys
from contextlib import contextmanager


def _one_line_errors(exc_type, exc, tb):
    """sys.excepthook of the scripts: an error the scripts did not foresee still ends in one line, not a traceback
    (NANOGPT_DEBUG=1 shows it)."""
    if issubclass(exc_type, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        message = f"the disk is full{f' writing {exc.filename}' if exc.filename else ''}: free some space and run again"
    elif isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}{f': {exc.filename}' if exc.filename else ''}"
    elif isinstance(exc, UnicodeDecodeError):
        message = f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}): convert it to UTF-8"
    elif isinstance(exc, ModuleNotFoundError) and exc.name:
        message = f"the {exc.name} package is not installed: pip install {exc.name.split('.')[0]}"
    else:
        message = f"{exc_type.__name__}: {exc}"
    print(f"error: {message} (NANOGPT_DEBUG=1 shows the traceback)", file=sys.stderr)
    sys.exit(1)


def one_line_errors():
    """From now on an uncaught exception ends the script with one line on stderr (unless NANOGPT_DEBUG is set).
    Every script calls it first thing under `if __name__ == '__main__':`."""
    if not os.environ.get('NANOGPT_DEBUG'):
        sys.excepthook = _one_line_errors


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`, renamed to `path` only when the block completes, so an
    interrupted write never leaves a truncated file under the final name. Temporary files of `path` that a killed
    process left behind (its pid no longer running) are removed first: at GPT-2 size each is gigabytes."""
    for stale in glob.glob(glob.escape(path) + '.tmp*'):
        pid = stale[len(path) + 4:]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            os.remove(stale)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download(url: str, path: str, offline_hint: str):
    """Fetch url into path (atomically); offline, one clear message ending with offline_hint."""
    import urllib.request
    print(f"downloading {url} to {path}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(path) as tmp:
            with open(tmp, 'wb') as f:
                f.write(response.read())
    except OSError as e:
        raise SystemExit(f"error: could not download {url} ({e}).\n{offline_hint}") from None
