"""
out_dir as a unit: what a run may do with the folder another run left, and who holds it while a run writes there.

    ckpt.pt    the checkpoint (nanogpt/checkpoint.py)
    log.jsonl  the run log (nanogpt/runlog.py)
    run.lock   the host and pid of the run that holds the folder (removed when that run ends)

A run that does not continue the folder's run (--init_from other than resume) refuses a folder that holds a
checkpoint or a log, since it would overwrite them; a torchrun restart of the same job continues from the checkpoint.
While a run writes in the folder its master process holds run.lock (an flock, which the system releases when the
process dies however it dies): a second run into the same folder refuses, naming the holder. An eval-only run
writes nothing to the folder, so it neither checks nor holds it.
"""

import atexit
import json
import os
import socket
import time

from nanogpt.files import LOCKING, check_destination, hold_folder, lock_nowait, make_folder, open_regular
from nanogpt.runlog import read_records

LOCK = 'run.lock'
# the same in every restart of one torchrun job, and in no other: torchrun's run id is 'none' for every job started
# without a rendezvous id (rdzv-id, or standalone), so the agent that restarts the workers (their parent) is named too
RUN_ID = f"{os.environ['TORCHELASTIC_RUN_ID']}@{socket.gethostname()}:{os.getppid()}" \
    if 'TORCHELASTIC_RUN_ID' in os.environ else None


def _run_id(log_path: str) -> str | None:
    """The run id of the job whose start record is the last in a log.jsonl."""
    if not os.path.exists(log_path):
        return None
    starts = [r for r in read_records(log_path, note=lambda _: None) if 'params' in r]
    return starts[-1].get('run_id') if starts else None


def claim(out_dir: str, init_from: str, eval_only: bool, master: bool) -> str:
    """Check, before anything is built or downloaded, that this run may write in out_dir: the init_from to use,
    'resume' for a torchrun restart of a run that saved a checkpoint. SystemExit when the folder is not this run's
    to write. Nothing is written: hold() takes the folder once the run is about to write there."""
    make_folder(out_dir, 'out_dir', create=False)
    if eval_only:
        if init_from == 'scratch' and master and os.path.exists(os.path.join(out_dir, 'ckpt.pt')):
            print(f"note: eval_only evaluates a new model from scratch; {os.path.join(out_dir, 'ckpt.pt')} is not "
                  f"read (--init_from=resume reads it)")
        return init_from
    lock = _lock(os.path.join(out_dir, LOCK), create=False) if master else None
    if lock:
        lock.close()  # a live holder first: it explains what the files below would not
    for name in ('ckpt.pt', 'log.jsonl'):  # what the run will write: refused now, not at its first save
        check_destination(os.path.join(out_dir, name))
    return _check_files(out_dir, init_from, master)


def hold(out_dir: str, init_from: str):
    """Create out_dir and hold it for this process until it exits or calls release(); SystemExit while another
    process holds it, or when another run wrote there since claim() looked. A lock left by a process that died is
    taken over, with a note."""
    make_folder(out_dir, 'out_dir')
    lock = _lock(os.path.join(out_dir, LOCK))
    if LOCKING:  # the folder itself too: a run.lock removed by hand then holds nothing
        folder = os.open(out_dir, os.O_RDONLY)
        if not lock_nowait(folder):
            os.close(folder)
            lock.close()
            raise SystemExit(f"error: {out_dir} is in use by another run (whose run.lock was removed), whose files "
                             f"this one would overwrite: wait for it to end, or choose another out_dir")
        _folders.append((out_dir, folder))
        hold_folder(out_dir, folder)  # every write into it checks it is still this folder (moved, replaced: refused)
    _check_files(out_dir, init_from, master=False)  # again, now that no other run can start writing
    _hold(lock)


def _check_files(out_dir: str, init_from: str, master: bool) -> str:
    ckpt_path, log_path = os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, 'log.jsonl')
    model = [n for n in ('config.json', 'model.safetensors') if os.path.exists(os.path.join(out_dir, n))]
    if model:  # an export: its files and a run's checkpoint would be two models in one folder
        raise SystemExit(f"error: out_dir={out_dir} holds a model ({', '.join(model)}), an export: a run's checkpoint "
                         f"there would make the folder mean two models; choose another out_dir")
    if init_from == 'resume' or not (os.path.exists(ckpt_path) or os.path.exists(log_path)):
        return init_from
    # a torchrun restart of the job that wrote the folder (its run id in the log's last start record) continues it
    restarted = int(os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)) > 0 and _run_id(log_path) == RUN_ID
    if restarted and os.path.exists(ckpt_path):
        if master:
            print(f"restarted by torchrun: resuming from {ckpt_path}")
        return 'resume'
    if restarted:  # the job's first attempt died before its first checkpoint: its log is this job's to redo
        return init_from
    if os.path.exists(ckpt_path):
        raise SystemExit(f"error: {ckpt_path} holds the checkpoint of an earlier run, which this one would "
                         f"overwrite: continue it with --init_from=resume, or start over in another out_dir "
                         f"(or remove the file)")
    raise SystemExit(f"error: {log_path} holds the log of an earlier run (which saved no checkpoint), which this "
                     f"one would overwrite: start in another out_dir, or remove the file to start over here")


_held = []  # the open lock file of the folder this process holds (the flock lives as long as it is open)
_folders = []  # and the folder's own (path, descriptor), flocked too


def _lock(path: str, create: bool = True):
    """The lock file, opened and flocked by this process (created if missing, left unchanged otherwise); SystemExit
    while another process holds it. create=False: None where there is no lock file (a look that writes nothing)."""
    while True:
        try:
            f = _try_lock(path, create)
        except FileNotFoundError:  # create=False, and none there
            if create:
                raise
            return None
        try:  # a run that ends removes the file before it lets go: a lock on a file no longer at path holds nothing
            if not LOCKING or os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()


def _try_lock(path: str, create: bool):
    f = open_regular(path, 'a+' if create else 'r+')
    if not lock_nowait(f):  # held by another process
        holder = _read_holder(f)
        f.close()
        raise SystemExit(f"error: {os.path.dirname(path) or '.'} is in use by another run ({holder or 'starting'}), "
                         f"whose files this one would overwrite: wait for it to end, or choose another out_dir")
    return f


def _hold(f):
    """Write this process into the flocked lock file."""
    previous = _read_holder(f)
    if previous:
        print(f"note: {f.name} was left by a run that did not end, or was copied with its folder ({previous}, "
              f"holding no lock here): taken over")
    f.seek(0)
    f.truncate()
    f.write(json.dumps({'host': socket.gethostname(), 'pid': os.getpid(), 'since': time.strftime('%Y-%m-%d %H:%M:%S'),
                        'run_id': os.environ.get('TORCHELASTIC_RUN_ID')}) + '\n')
    f.flush()
    _held.append(f)
    atexit.register(release)


def _read_holder(f) -> str:
    """'pid P on host H since T' from an open lock file, '' for an empty one (released cleanly)."""
    f.seek(0)
    text = f.buffer.read().decode('utf-8', 'replace').strip()  # whatever bytes someone left there
    if not text:
        return ''
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on host {h['host']} since {h['since']}"
    except (ValueError, KeyError, TypeError):
        return f"{f.name} says {text[:80]!r}"


def release():
    """Let go of the folder this process holds: the lock file is removed while still held (a run that opened it
    meanwhile finds it gone and opens a new one), so an ended run leaves no run.lock behind."""
    while _held:
        f = _held.pop()
        try:
            os.remove(f.name)
        except OSError:  # already gone, or a folder that no longer lets us: the flock still goes with the file
            pass
        f.close()
    while _folders:
        path, fd = _folders.pop()
        hold_folder(path, None)
        os.close(fd)
