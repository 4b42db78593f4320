"""python tests/limited.py BYTES script.py [args]: run a script of the repository with its address space limited to
BYTES (0: no limit), as a machine with that much memory would; at exit print the process's peak address space
('VmPeak: N kB', from which tests calibrate a limit) and peak resident memory ('VmHWM: N kB') to stderr."""
import atexit
import os
import resource
import runpy
import sys

# glibc reads MALLOC_MMAP_THRESHOLD_ as a process starts; a process forked from one that started without it (as
# tests/launcher.py's are) sets it here, before the run allocates
if os.environ.get('MALLOC_MMAP_THRESHOLD_'):
    import ctypes
    ctypes.CDLL(None).mallopt(-3, int(os.environ['MALLOC_MMAP_THRESHOLD_']))  # -3: M_MMAP_THRESHOLD

limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@atexit.register
def peak():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(('VmPeak', 'VmHWM')):  # peak address space, peak resident memory
                print(line.strip(), file=sys.stderr, flush=True)


repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, repo)
sys.argv = sys.argv[2:]
runpy.run_path(os.path.join(repo, sys.argv[0]), run_name='__main__')
