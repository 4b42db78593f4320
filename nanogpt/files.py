"""
Writing files: atomically (a temporary file beside the destination, renamed into place, so an interrupted write never
leaves a truncated file that a later run would use), and downloading one. Torch-free, for the prepare scripts too.
"""

import errno
import glob
import os
from contextlib import contextmanager


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
        # writers that create their files 0600 (safetensors) would keep them from a teammate: the umask decides
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as e:
        if not (isinstance(e, OSError) and e.errno == errno.ENOSPC) and _full(tmp):
            # a full disk as the writer reports it (torch.save: "RuntimeError: ... unexpected pos"), said plainly
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    try:  # read, not set: setting it even for a moment would apply to files other threads create meanwhile
        with open('/proc/self/status') as f:
            return int(next(line.split()[1] for line in f if line.startswith('Umask:')), 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _full(path: str, margin: int = 1 << 20) -> bool:
    """Whether the filesystem of path has less than margin bytes left (a write that failed there filled it)."""
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return fs.f_bavail * fs.f_frsize < margin


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
