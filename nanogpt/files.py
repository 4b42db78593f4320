"""
The one writer of every file the project writes (checkpoints, exports, token files, meta files, logs, plots, bench
results, the run lock). atomic_path writes a whole file: a temporary file beside the destination, renamed into
place, so an interrupted write never leaves a truncated file that a later run would use. open_regular opens one to
append to or lock (lock_nowait). Neither writes through a symbolic link, nor into a FIFO, a device or a folder at
the destination: such a destination is refused in one line (a link planted in a folder handed over would make a
write change a file outside it). open_source opens a file the project reads, refusing the same (a FIFO would hang a
reader); read_text reads a text file the user hands over (a prompt, a text, a corpus, HellaSwag rows), naming it
when it is missing or not UTF-8. Also: downloading a file. Torch-free, for the prepare scripts too.
"""

import errno
import glob
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # Windows: no flock, so a folder is not held (not enforced)
    fcntl = None
LOCKING = fcntl is not None

KINDS = {stat.S_ISLNK: 'a symbolic link', stat.S_ISDIR: 'a folder', stat.S_ISFIFO: 'a FIFO', stat.S_ISSOCK: 'a socket',
         stat.S_ISCHR: 'a device', stat.S_ISBLK: 'a device'}


def _kind(mode: int) -> str | None:
    """What a file of this mode is, where it is not a regular file."""
    return next((name for test, name in KINDS.items() if test(mode)), None)


_held = {}  # the folders this process holds (a run's out_dir, rundir.hold): path -> its open descriptor


def hold_folder(path: str, fd: int | None):
    """From now on every write into path (through atomic_path or open_regular) checks that path still names the
    folder fd was opened on; fd None lets go."""
    if fd is None:
        _held.pop(os.path.abspath(path), None)
    else:
        _held[os.path.abspath(path)] = fd


def _check_held(path: str):
    """SystemExit when path lies in a held folder whose name now means another folder, or none: moved away and
    another made in its place, or a link to another run's folder put there. Writing on would mix this run's files
    into that folder, where no lock of this run's stands."""
    where = os.path.abspath(path)
    for folder, fd in _held.items():
        if where.startswith(folder + os.sep):
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(folder))
            except OSError:
                same = False
            if not same:
                raise SystemExit(f"error: {folder} is no longer the folder this run started in (moved, removed or "
                                 f"replaced since, or a link put there): {os.path.basename(path)} is not written "
                                 f"there; what the run wrote is in the folder it was moved to, if any")


def check_destination(path: str):
    """SystemExit unless path is free or a regular file, the only things the project writes in place of, with a name
    short enough for its temporary name (path.tmpPID) to be one too, in a folder this process holds if it is in one."""
    _check_held(path)
    name = os.path.basename(path)
    if len(os.fsencode(name)) + len('.tmp') + 7 > 255:  # most filesystems' longest name, in bytes
        raise SystemExit(f"error: the name {name[:40]}... is {len(os.fsencode(name))} bytes long, too long to write "
                         f"under a temporary name first: give a name of at most 244 bytes")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    kind = _kind(mode)
    if kind:
        target = f" (to {os.readlink(path)})" if stat.S_ISLNK(mode) else ''
        raise SystemExit(f"error: {path} is {kind}{target}, where this run writes a file: the project writes only "
                         f"regular files, never through a link; move it away, or choose another folder")


def open_source(path: str, mode: str = 'r', **kwargs):
    """open(path, mode) of a file the project reads, refusing a FIFO (which would wait forever for a writer), a
    device, a socket or a folder there, in one line; a link to a regular file is read."""
    try:
        kind = _kind(os.stat(path).st_mode)  # through links: what they point to
    except OSError:
        kind = None  # missing: open says so
    if kind:
        raise SystemExit(f"error: {path} is {kind}, where a file is read: put the file itself there")
    return open(path, mode, **kwargs)


def read_text(path: str, what: str = 'file') -> str:
    """The text of a UTF-8 file (a byte order mark dropped) read through open_source; a path that is missing, not a
    file or not UTF-8 is one line naming it and what it is (what: 'prompt file', 'text file', ...)."""
    if not path or not os.path.exists(path):
        raise SystemExit(f"error: {what} {path!r} not found{tilde(path)}")
    try:
        with open_source(path, encoding='utf-8-sig') as f:
            text = f.read()
        if '\x00' in text:  # valid UTF-8, yet no text: a token file, say
            raise SystemExit(f"error: {what} {path} holds NUL bytes (at character {text.index(chr(0)):,}): it is not "
                             f"text (a token file?); give a text file")
        return text
    except UnicodeDecodeError as e:
        if b'\x00' in e.object[:4096] and e.object[:2] not in (b'\x1f\x8b', b'PK'):  # binary: no conversion helps
            raise SystemExit(f"error: {what} {path} is not text (NUL bytes, and not UTF-8): a token file? give a text "
                             f"file") from None
        packed = {b'\x1f\x8b': 'gzip-compressed: gunzip it', b'PK': 'a zip archive: unzip it'}.get(e.object[:2])
        raise SystemExit(f"error: {what} {path} is not UTF-8 text ({e.reason} at byte {e.start}): "
                         f"{packed or 'convert it, e.g. with iconv -t utf-8'}") from None


def tilde(path: str) -> str:
    """' (...)': what to write instead of a path whose ~ no shell expanded (--input=~/x), else ''."""
    return f" (the shell leaves a ~ after = as it is: write {os.path.expanduser(path)})" if unexpanded(path) else ''


def unexpanded(path: str) -> bool:
    """Whether path starts with a ~ that no shell expanded (--out_dir=~/x) and no folder of that name exists."""
    return bool(path) and path.startswith('~') and not os.path.exists(path.split(os.sep)[0])


def read_json(path: str, what: str, fix: str):
    """The JSON in a file read through read_text (a byte order mark dropped); not JSON is one line naming the file,
    the reason, and what to do (fix)."""
    try:
        return json.loads(read_text(path, what))
    except ValueError as e:
        raise SystemExit(f"error: {path} is not valid JSON ({e}): {fix}") from None


def open_regular(path: str, mode: str, encoding: str = 'utf-8'):
    """open(path, mode) for 'a', 'a+' or 'r+', refusing what check_destination refuses (O_NOFOLLOW: a link put
    there after the check is refused by the system)."""
    check_destination(path)
    flags = {'a': os.O_WRONLY | os.O_CREAT | os.O_APPEND, 'a+': os.O_RDWR | os.O_CREAT | os.O_APPEND,
             'r+': os.O_RDWR}[mode]
    try:
        fd = os.open(path, flags | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_NONBLOCK', 0), 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            check_destination(path)  # says what is there
        if e.errno == errno.ENOENT and mode != 'r+' and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise SystemExit(f"error: cannot write {path}: its folder {os.path.dirname(os.path.abspath(path))} is gone "
                             f"(moved or removed while this script wrote in it)") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        check_destination(path)
    if st.st_nlink > 1:  # a hard link (cp -al): writing would change the file under its other names too
        os.close(fd)
        raise SystemExit(f"error: {path} is a hard link ({st.st_nlink} names for one file), where this run writes a "
                         f"file: writing would change the others too; remove it (or copy the folder without -l)")
    os.set_blocking(fd, True)
    f = os.fdopen(fd, mode, encoding=encoding)
    f.buffer.raw.name = path  # what open() would name it
    return f


def lock_nowait(f) -> bool:
    """An exclusive flock on the open file f, without waiting: False while another process holds one; True once this
    process does, or where the system cannot lock (Windows, some network mounts), where it is not enforced. The
    system releases it when the process ends, however it ends."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without flock
        pass
    return True


def lock_wait(f):
    """An exclusive flock on the open file f, waiting for it (where the system can lock), held until f is closed."""
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:  # a filesystem without flock: not enforced
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise


def ended(pid: str) -> bool:
    """Whether pid (a string) names another process, no longer running: one whose leftovers may go."""
    return pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))


def stale_temporary(path: str) -> bool:
    """Whether path is a temporary file a killed writer left (NAME.tmpPID, a regular file, that pid not running)."""
    return ended(path.rpartition('.tmp')[2]) and os.path.isfile(path) and not os.path.islink(path)


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
    process left behind (its pid no longer running) are removed first: at GPT-2 size each is gigabytes. A destination
    that is not a regular file is refused before anything is written (check_destination)."""
    check_destination(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SystemExit(f"error: cannot write {path}: the folder {folder} does not exist; create it, or choose "
                         f"another path")
    for stale in glob.glob(glob.escape(path) + '.tmp*'):
        if stale_temporary(stale):
            os.remove(stale)
    tmp = f"{path}.tmp{os.getpid()}"
    if os.path.isdir(tmp) and not os.path.islink(tmp):  # never a folder someone keeps
        raise SystemExit(f"error: {tmp} is a folder, where {path} is written before it is renamed: move it away")
    if os.path.lexists(tmp):  # this pid's own leftover, or something planted there: the writer creates it anew
        os.remove(tmp)
    try:
        yield tmp
        # writers that create their files 0600 (safetensors) would keep them from a teammate: the umask decides
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as e:
        # a full disk, a quota or a file size limit, however the writer reports it (torch.save: "RuntimeError: ...
        # unexpected pos"), said plainly and of the destination
        code = e.errno if isinstance(e, OSError) and e.errno in NO_ROOM else \
            errno.ENOSPC if 'No space left on device' in str(e) else _no_room(tmp)
        if code:
            raise OSError(code, os.strerror(code), path) from e
        if isinstance(e, OSError) and e.filename == tmp:  # a read-only folder, say: named by what was written
            raise OSError(e.errno, e.strerror, path) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


STAGED = '.staged'  # the mark of a staging folder new_folder made: only a marked one is ever removed


@contextmanager
def new_folder(path: str, key: str):
    """Yield a staging folder that becomes path (new, or an empty folder) only when the block completes: never half
    a folder at path. The staging folder is made afresh beside path under a hidden name no one else has, so a folder
    someone keeps is never written in nor removed, and its name fits whatever path's length; those a killed process
    left (marked, their pid no longer running) are removed by the next."""
    make_folder(path, key, create=False)
    parent = os.path.dirname(os.path.abspath(path))
    make_folder(parent, key)
    for name in os.listdir(parent):
        pid = name[len('.tmp'):].partition('.')[0] if name.startswith('.tmp') else ''
        stale = os.path.join(parent, name)
        if ended(pid) and os.path.isfile(os.path.join(stale, STAGED)) \
                and not os.path.islink(stale):
            shutil.rmtree(stale, ignore_errors=True)
    stage = tempfile.mkdtemp(prefix=f'.tmp{os.getpid()}.', dir=parent)
    try:
        with atomic_path(os.path.join(stage, STAGED)) as tmp, open(tmp, 'w'):
            pass
        yield stage
        os.remove(os.path.join(stage, STAGED))
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp's 0700 would keep it from a teammate: the umask decides
        os.replace(stage, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _umask() -> int:
    try:  # read, not set: setting it even for a moment would apply to files other threads create meanwhile
        with open('/proc/self/status') as f:
            return int(next(line.split()[1] for line in f if line.startswith('Umask:')), 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a full disk, a quota, a file size limit (ulimit -f)


def _no_room(path: str, margin: int = 1 << 20) -> int:
    """The errno of what stopped a write of path that failed, where it is room: ENOSPC when its filesystem has less
    than margin bytes left, EFBIG when it reached the process's file size limit; else 0."""
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
        if fs.f_bavail * fs.f_frsize < margin or (fs.f_files and fs.f_favail == 0):  # no bytes, or no inodes, left
            return errno.ENOSPC
        import resource
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return errno.EFBIG if limit != resource.RLIM_INFINITY and os.path.getsize(path) >= limit else 0
    except (OSError, AttributeError, ImportError):  # no statvfs nor resource on Windows; no file written
        return 0


def make_folder(path: str, key: str, create: bool = True, fix: str = '') -> str:
    """path, a folder the script writes in (key names the option), made if missing (unless create=False: checked
    only); an empty path, a path where a file stands in for a folder (at it or above it), a '..' after a folder that
    does not exist (makedirs would make it), or a ~ no shell expanded, is one line naming the option."""
    if not path:
        raise SystemExit(f"error: {key} is empty: give it a folder")
    if unexpanded(path):  # the shell leaves a ~ after = as it is
        raise SystemExit(f"error: {key}={path} would make a folder named '~' here: write {key}="
                         f"{os.path.expanduser(path)} (the shell expands ~ only at the start of a word)")
    parts = path.split(os.sep)
    for i, part in enumerate(parts):
        above = os.sep.join(parts[:i]) or (os.sep if path.startswith(os.sep) else '.')
        if part == '..' and not os.path.isdir(above):
            raise SystemExit(f"error: {key}={path} goes up (..) from {above}, which does not exist: give the folder "
                             f"meant")
    at = path.rstrip(os.sep) or os.sep
    while not os.path.isdir(at):  # the nearest part that exists must be a folder
        if os.path.exists(at) or os.path.islink(at):
            kind = _kind(os.stat(at).st_mode) if os.path.exists(at) else 'a broken symbolic link'
            given = key if key == path else f"{key}={path}"  # (a folder no option sets: bench_log)
            where = f"{given} is" if at == path.rstrip(os.sep) else f"{given} lies under {at}, which is"
            raise SystemExit(f"error: {where} {kind or 'a file'}, not a folder: {fix or f'choose another {key}'}")
        at = os.path.dirname(at) or '.'
    if create:
        os.makedirs(path, exist_ok=True)
    return path


def download(url: str, path: str, offline_hint: str, key: str):
    """Fetch url into path (atomically), making its folder (key names the option that sets it); offline, one clear
    message ending with offline_hint, and a folder made for it removed again."""
    import urllib.request
    folder = os.path.dirname(path) or '.'
    made = not os.path.isdir(folder)
    make_folder(folder, key)
    print(f"downloading {url} to {path}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(path) as tmp:
            with open(tmp, 'wb') as f:
                f.write(response.read())
    except OSError as e:
        if made and not os.listdir(folder):
            os.rmdir(folder)
        raise SystemExit(f"error: could not download {url} ({e}). {offline_hint}") from None
