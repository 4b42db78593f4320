"""
The one writer (nanogpt/files.py): every file the project writes goes through atomic_path (whole files) or
open_regular (the log it appends to, the lock). Neither writes through a symbolic link, nor into a FIFO, a device or
a folder at the destination: each is refused in one line, and what the link points to is left as it was.
"""
import os
import re

import pytest
from conftest import REPO, one_line_error, run_script, train

from nanogpt.files import atomic_path, open_regular


def plant(kind: str, path, outside):
    """Something other than a regular file at path: a link to a file outside the folder, a FIFO, or a folder."""
    if kind == 'link':
        os.symlink(outside, path)
    elif kind == 'fifo':
        os.mkfifo(path)
    else:
        os.mkdir(path)


def write_whole(path):
    with atomic_path(str(path)) as tmp, open(tmp, 'w') as f:
        f.write('new\n')


def append(path):
    with open_regular(str(path), 'a') as f:
        f.write('new\n')


def lock(path):
    open_regular(str(path), 'a+').close()


@pytest.mark.parametrize('writer', [write_whole, append, lock])
@pytest.mark.parametrize('kind, says', [('link', 'is a symbolic link (to '), ('fifo', 'is a FIFO'),
                                        ('dir', 'is a folder')])
def test_a_destination_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, writer, kind, says):
    outside = tmp_path / 'outside.txt'
    outside.write_text('precious\n')
    (tmp_path / 'run').mkdir()
    path = tmp_path / 'run' / 'file'
    plant(kind, path, outside)
    with pytest.raises(SystemExit, match=rf"^error: {re.escape(str(path))} {re.escape(says)}.*choose another folder$"):
        writer(path)  # a FIFO would block an open() for writing until a reader came: this returns at once
    assert outside.read_text() == 'precious\n'
    assert sorted(os.listdir(tmp_path / 'run')) == ['file']  # no temporary file left either


@pytest.mark.parametrize('writer', [write_whole, append])
def test_a_regular_file_is_written_and_a_new_one_created(tmp_path, writer):
    path = tmp_path / 'file'
    writer(path)
    path.write_text('old\n')
    writer(path)
    assert path.read_text() == ('old\nnew\n' if writer is append else 'new\n')


def test_every_write_of_the_project_goes_through_the_one_writer():
    # whatever writes a file (open for writing, torch.save, savefig, safetensors' save_file) writes the temporary
    # path atomic_path yields; only nanogpt/files.py opens destinations itself
    sources = ['train.py', 'sample.py', 'bench.py', 'hellaswag.py', 'perplexity.py', 'export_hf.py', 'plot.py',
               *(f'nanogpt/{f}' for f in os.listdir(os.path.join(REPO, 'nanogpt')) if f.endswith('.py')),
               *(f'data/{d}/prepare.py' for d in os.listdir(os.path.join(REPO, 'data'))
                 if os.path.exists(os.path.join(REPO, 'data', d, 'prepare.py')))]
    writes = re.compile(r"open\(([^,()]+(?:\([^()]*\))?), '[wax]b?\+?'|torch\.save\([^,]+, ([^,)]+)|"
                        r"savefig\(([^,)]+)|save_file\([^,]+\), ([^,)]+)")
    found = 0
    for source in sources:
        if source == 'nanogpt/files.py':
            continue
        for m in writes.finditer(open(os.path.join(REPO, source)).read()):
            target = next(g for g in m.groups() if g)
            assert target in ('tmp', 'self._atomic.__enter__()'), f"{source}: {m.group(0)}"
            found += 1
    assert found >= 8


def test_a_run_whose_log_is_a_planted_link_refuses_to_write_through_it(char_data, tmp_path):
    out = tmp_path / 'out'
    train(char_data, out, '--max_iters=2', '--eval_interval=2')
    outside = tmp_path / 'outside.txt'
    outside.write_text('precious\n')
    os.replace(out / 'log.jsonl', tmp_path / 'moved.jsonl')
    os.symlink(outside, out / 'log.jsonl')
    proc = train(char_data, out, '--max_iters=4', '--eval_interval=2', '--init_from=resume', check=False)
    one_line_error(proc, f"{out / 'log.jsonl'} is a symbolic link (to {outside})")
    assert outside.read_text() == 'precious\n'


def test_bench_results_are_not_written_through_a_link(tmp_path):
    outside = tmp_path / 'outside.json'
    outside.write_text('precious\n')
    os.symlink(outside, tmp_path / 'bench.json')
    proc = run_script('bench.py', '--device=cpu', '--compile=False', '--n_layer=1', '--n_head=2', '--n_embd=32',
                      '--block_size=32', '--batch_size=2', '--burnin_steps=1', '--benchmark_steps=1',
                      '--real_data=False', f'--json={tmp_path / "bench.json"}', check=False)
    one_line_error(proc, 'bench.json is a symbolic link')
    assert outside.read_text() == 'precious\n'


@pytest.mark.parametrize('name', ['ckpt.pt', 'log.jsonl'])
def test_a_fifo_where_a_run_reads_is_refused_without_waiting_for_a_writer(char_data, tmp_path, name):
    out = tmp_path / 'out'
    train(char_data, out, '--max_iters=2', '--eval_interval=2')
    os.remove(out / name)
    os.mkfifo(out / name)  # open() of a FIFO for reading waits for a writer that never comes
    proc = train(char_data, out, '--max_iters=4', '--eval_interval=2', '--init_from=resume', check=False)
    one_line_error(proc, f"{out / name} is a FIFO")


@pytest.mark.parametrize('where', ['file', 'fifo', 'empty'])
@pytest.mark.parametrize('script', ['data/shakespeare_char/prepare.py', 'data/openwebtext/prepare.py', 'train.py'])
def test_every_output_folder_that_is_no_folder_is_refused_in_one_line_naming_the_option(char_data, tmp_path, where,
                                                                                        script):
    # nanogpt.files.make_folder, where every out_dir (a run's, a prepare's) is made, checked before any work
    out = tmp_path / 'out'
    if where == 'file':
        out.write_text('my notes')
    elif where == 'fifo':
        os.mkfifo(out)
    (tmp_path / 'in.txt').write_text('some text to prepare\n' * 10)
    args = [f'--input={tmp_path / "in.txt"}'] if 'prepare' in script else ['--max_iters=1', f'--dataset={char_data}']
    args.append(f'--out_dir={"" if where == "empty" else out}')
    says = 'out_dir is empty: give it a folder' if where == 'empty' else \
        f"out_dir={out} is {'a file' if where == 'file' else 'a FIFO'}, not a folder: choose another out_dir"
    if script == 'train.py':
        one_line_error(train(char_data, out, *args, check=False), says)
    else:
        import runpy
        main = runpy.run_path(os.path.join(REPO, script), run_name='not_main')['main']
        with pytest.raises(SystemExit, match=re.escape(says)):
            main(args)
    assert sorted(os.listdir(tmp_path)) == ['in.txt'] + (['out'] if where != 'empty' else [])


def test_an_append_into_a_folder_moved_away_meanwhile_says_the_folder_is_gone(tmp_path):
    from nanogpt.files import open_regular
    with pytest.raises(SystemExit, match=r"cannot write \S+/run/log.jsonl: its folder \S+/run is gone \(moved or "
                                         r"removed while this script wrote in it\)"):
        open_regular(str(tmp_path / 'run' / 'log.jsonl'), 'a')


def test_a_name_too_long_for_its_temporary_name_or_a_folder_at_that_name_is_refused_before_writing(tmp_path):
    from nanogpt.files import atomic_path
    with pytest.raises(SystemExit, match='245 bytes long, too long to write under a temporary name'):
        with atomic_path(str(tmp_path / ('a' * 245))):
            pytest.fail('written')
    with atomic_path(str(tmp_path / ('b' * 244))) as tmp:  # the longest that fits
        open(tmp, 'w').write('x')
    (tmp_path / f'ckpt.pt.tmp{os.getpid()}').mkdir()  # a folder planted at the temporary name: kept, named
    (tmp_path / f'ckpt.pt.tmp{os.getpid()}' / 'notes.txt').write_text('mine')
    with pytest.raises(SystemExit, match=f'ckpt.pt.tmp{os.getpid()} is a folder, where .*ckpt.pt is written'):
        with atomic_path(str(tmp_path / 'ckpt.pt')):
            pytest.fail('written')
    assert (tmp_path / f'ckpt.pt.tmp{os.getpid()}' / 'notes.txt').read_text() == 'mine'


def test_a_folder_written_whole_never_uses_nor_removes_a_folder_someone_keeps(tmp_path):
    # nanogpt.files.new_folder, export_hf's writer: its staging folder is new, hidden, marked; a killed one's goes
    from nanogpt.files import STAGED, new_folder
    kept = [tmp_path / f'model.tmp{os.getpid()}', tmp_path / '.tmp999999999.x']  # names a stage once had; unmarked
    for folder in kept:
        folder.mkdir()
        (folder / 'notes.txt').write_text('mine')
    stale = tmp_path / '.tmp999999999.abc'  # a killed export's (no such pid), marked
    stale.mkdir()
    (stale / STAGED).write_text('')
    with new_folder(str(tmp_path / 'model'), 'dest') as stage:
        assert os.path.basename(stage).startswith(f'.tmp{os.getpid()}.') and os.listdir(stage) == [STAGED]
        open(os.path.join(stage, 'config.json'), 'w').write('{}')
    assert os.listdir(tmp_path / 'model') == ['config.json']
    assert all((folder / 'notes.txt').read_text() == 'mine' for folder in kept) and not stale.exists()
    with pytest.raises(RuntimeError), new_folder(str(tmp_path / 'other'), 'dest'):
        raise RuntimeError  # a failed write: nothing at dest, no stage left
    assert sorted(os.listdir(tmp_path)) == sorted(['model', *(f.name for f in kept)])
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(SystemExit, match=r"dest=\S+/notes.txt/model lies under \S+/notes.txt, which is a file"):
        with new_folder(str(tmp_path / 'notes.txt' / 'model'), 'dest'):
            pass


def test_an_output_folder_given_with_a_tilde_the_shell_left_is_refused(tmp_path, monkeypatch):
    # --out_dir=~/run: no shell expands a ~ after =, and the run would make a folder named '~' in the cwd
    from nanogpt.files import make_folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=re.escape(f"write out_dir={os.path.expanduser('~/run')} (the shell")):
        make_folder('~/run', 'out_dir')
    assert os.listdir(tmp_path) == []
    os.mkdir('~')  # one made on purpose is used
    assert make_folder('~/run', 'out_dir') == '~/run' and os.path.isdir(tmp_path / '~' / 'run')


@pytest.mark.parametrize('writer', [append, lock])
def test_a_hard_link_where_a_file_is_appended_or_locked_is_refused(tmp_path, writer):
    # a folder copied with cp -al: the lock's or the log's other name is a file outside the folder
    outside = tmp_path / 'outside.txt'
    outside.write_text('precious\n')
    (tmp_path / 'run').mkdir()
    os.link(outside, tmp_path / 'run' / 'file')
    with pytest.raises(SystemExit, match=r"run/file is a hard link \(2 names for one file\).*remove it"):
        writer(tmp_path / 'run' / 'file')
    assert outside.read_text() == 'precious\n'


def test_a_write_into_a_missing_folder_names_the_folder(tmp_path):
    folder = re.escape(str(tmp_path / 'nope'))
    with pytest.raises(SystemExit, match=rf"^error: cannot write .*loss.png: the folder {folder} does not exist"):
        write_whole(tmp_path / 'nope' / 'loss.png')


def test_a_file_size_limit_is_said_of_the_destination_and_leaves_nothing(tmp_path):
    # ulimit -f: the write fails with EFBIG (Python ignores SIGXFSZ), or a writer's own error (torch.save's) as it
    import errno
    import resource
    path = tmp_path / 'ckpt.pt'
    path.write_bytes(b'the previous checkpoint')
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError) as e:
            with atomic_path(str(path)) as tmp:
                import torch
                torch.save({'w': torch.zeros(10_000)}, tmp)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert e.value.errno == errno.EFBIG and e.value.filename == str(path)
    assert path.read_bytes() == b'the previous checkpoint' and os.listdir(tmp_path) == ['ckpt.pt']


def test_a_folder_written_whole_has_the_umasks_mode(tmp_path):
    from nanogpt.files import new_folder
    mask = os.umask(0o022)
    try:
        with new_folder(str(tmp_path / 'export'), 'dest'):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / 'export').stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700


@pytest.mark.parametrize('swap', ['moved-and-made-again', 'link-to-another-run'])
def test_a_write_into_a_held_folder_whose_name_now_means_another_is_refused(tmp_path, swap):
    # a run's out_dir moved away and made again, or replaced by a link to another run's folder, while it trains:
    # its checkpoint went into that folder, past that run's lock, overwriting its ckpt.pt
    from nanogpt.files import hold_folder
    run, other = tmp_path / 'run', tmp_path / 'other'
    run.mkdir()
    other.mkdir()
    (other / 'ckpt.pt').write_text('the other run')
    fd = os.open(run, os.O_RDONLY)
    hold_folder(str(run), fd)
    try:
        with atomic_path(str(run / 'ckpt.pt')) as tmp:
            open(tmp, 'w').write('ours')  # still ours: written
        os.rename(run, tmp_path / 'moved')
        run.mkdir() if swap == 'moved-and-made-again' else os.symlink(other, run)
        writes = (lambda: atomic_path(str(run / 'ckpt.pt')).__enter__(), lambda: open_regular(str(run / 'log'), 'a'))
        for write in writes:
            with pytest.raises(SystemExit, match=f"{run} is no longer the folder this run started in"):
                write()
    finally:
        hold_folder(str(run), None)
        os.close(fd)
    assert (other / 'ckpt.pt').read_text() == 'the other run' and (tmp_path / 'moved' / 'ckpt.pt').read_text() == 'ours'


def test_a_run_never_writes_into_a_folder_holding_a_model(char_data, tmp_path):
    # an export's folder as out_dir: a checkpoint there would make it mean two models
    (tmp_path / 'exp').mkdir()
    (tmp_path / 'exp' / 'config.json').write_text('{}')
    one_line_error(train(char_data, tmp_path / 'exp', '--max_iters=1', check=False),
                   'holds a model (config.json), an export')
    assert os.listdir(tmp_path / 'exp') == ['config.json']
