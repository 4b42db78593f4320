"""
The token-file contract between data/<name>/prepare.py and training.

A dataset directory holds, for each split ('train' and 'val'), either
    <split>.bin                                   one file, or
    <split>_000000.bin, <split>_000001.bin, ...   numbered shards
of raw uint16 token ids in native (little-endian) byte order, nanoGPT's format, readable with
np.memmap(path, dtype=np.uint16, mode='r'). Beside them, optionally:
    meta.pkl    a character vocabulary (vocab_size, itos, stoi), nanoGPT's format
    meta.json   {"tokenizer": ..., "vocab_size": ..., "tokens": {split: count}}
Every file is written under a temporary name and renamed once complete, so a run that dies never leaves a
truncated file where a later run would read it.

Here: the writer (TokenWriter, into the folder preparing() stages and then swaps in whole), meta.json (write_meta,
read_meta, read_vocab), the fingerprints that tell one prepare's files from a mix, where a dataset lives
(dataset_dir) and the files of a split (split_files), and Dataset, the one reader through which every script opens a
dataset, applying every check, and which keeps the files it opened. This module imports no torch: the prepare
scripts need numpy only. What the prepare scripts share beyond the contract (the Shakespeare command line,
`datasets` loading, parallel tokenization) is in nanogpt/prepare.py; the reader, TokenLoader in nanogpt/loader.py,
serves train.py and bench.py.
"""

import glob
import json
import os
import pickle
import re
import shutil
import signal
import stat
import threading
from contextlib import contextmanager

import numpy as np

from nanogpt import fields
from nanogpt.errors import takes
from nanogpt.files import (atomic_path, check_destination, lock_nowait, make_folder, open_regular, open_source,
                           ended, read_json, stale_temporary, unexpanded)

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DTYPE = np.uint16
SHARD_RE = re.compile(r'^(train|val)_(\d{6})\.bin$')


class TokenWriter:
    """Appends token arrays to <split>.bin, or, with shard_size, to shards of shard_size tokens numbered from 0,
    where split_of(index) names the split of each shard. Use it as a context manager: files are renamed into place
    only as they complete, and an exception leaves none of the unfinished ones behind."""

    def __init__(self, data_dir: str, split_of, shard_size: int | None = None):
        self.data_dir = data_dir
        self.split_of = split_of if callable(split_of) else (lambda index: split_of)
        self.shard_size = shard_size
        self.counts = {}  # tokens written per split
        self.written = []  # paths of the files completed so far
        self.index = 0  # number of the shard being filled
        self.filled = 0  # tokens in the shard being filled
        self._file = None
        self._atomic = None

    def _open(self):
        split = self.split_of(self.index)
        name = f"{split}_{self.index:06d}.bin" if self.shard_size else f"{split}.bin"
        self._path = os.path.join(self.data_dir, name)
        self._atomic = atomic_path(self._path)
        self._file = open(self._atomic.__enter__(), 'wb')

    def _finish(self, exc=None):
        self._file.close()
        self._file = None
        self._atomic.__exit__(type(exc) if exc else None, exc, None)  # renames, or removes on error
        if exc is None:
            self.written.append(self._path)
            split = self.split_of(self.index)
            self.counts[split] = self.counts.get(split, 0) + self.filled
        self.index += 1
        self.filled = 0

    def write(self, tokens):
        tokens = np.asarray(tokens)
        if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(DTYPE).max):
            raise ValueError(f"token ids must fit in uint16 (0..65535), got {tokens.min()}..{tokens.max()}")
        tokens = tokens.astype(DTYPE)
        while tokens.size:
            if self._file is None:
                self._open()
            n = tokens.size if not self.shard_size else min(tokens.size, self.shard_size - self.filled)
            self._file.write(tokens[:n].tobytes())
            self.filled += n
            tokens = tokens[n:]
            if self.shard_size and self.filled == self.shard_size:
                self._finish()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._file is not None:
            self._finish(exc)
        if exc is None and self.shard_size:
            # shards a previous, larger run left behind would be read as part of this dataset
            for path in glob.glob(os.path.join(glob.escape(self.data_dir), '*_??????.bin')):
                if SHARD_RE.match(os.path.basename(path)) and path not in self.written:
                    os.remove(path)
        return False


def fingerprint(path: str, file=None) -> str:
    """Size and a hash of the first and last 64 KiB: tells a file from one another prepare wrote, and survives
    copying (unlike modification times). Of the file already open, when given (what a reader holds)."""
    import hashlib
    f = file or open_source(path, 'rb')
    try:
        size = os.fstat(f.fileno()).st_size
        f.seek(0)
        h = hashlib.sha256(f.read(1 << 16))
        f.seek(max(size - (1 << 16), 0))
        h.update(f.read(1 << 16))
    finally:
        if file is None:
            f.close()
    return f"{size}:{h.hexdigest()[:16]}"


def dataset_files(data_dir: str) -> list[str]:
    """The token files of both splits and nanoGPT's meta.pkl, where present."""
    pkl = os.path.join(data_dir, 'meta.pkl')
    return split_files(data_dir, 'train') + split_files(data_dir, 'val') + ([pkl] if os.path.exists(pkl) else [])


DATASET_RE = re.compile(r'^((train|val)(_\d{6})?\.bin|meta\.json|meta\.pkl)$')  # every file of a dataset, any layout


CACHE = '.prepare.cache'  # + pid: `datasets`' copy of a prepare's local input files (nanogpt/prepare.py)
STAGED = '.staged-by-prepare'  # the mark of a staging folder


@contextmanager
def preparing(data_dir: str, inputs=()):
    """The folder a prepare writes its new dataset into: a staging folder inside data_dir, held by one prepare at a
    time (an flock on data_dir/.prepare.lock). When the block completes, the staged dataset replaces data_dir's whole:
    until then every script reads the old dataset unchanged, and after it no file of the old one remains, whatever
    its layout (a train.bin where shards are now written, a meta.pkl beside BPE tokens). An error or an interrupt
    leaves data_dir as it was. Should the process die in the swap itself, meta.json says the dataset is incomplete,
    and every reader refuses it until it is prepared again. Refused before anything: a folder holding a model (an
    export: its meta.json is the model's), and inputs (the prepare's) that the swap would replace."""
    made = not os.path.isdir(data_dir)
    make_folder(data_dir, 'out_dir')
    model = [n for n in ('config.json', 'model.safetensors') if os.path.exists(os.path.join(data_dir, n))]
    if model:  # its meta.json is the model's vocabulary, not a dataset's
        raise SystemExit(f"error: out_dir={data_dir} holds a model ({', '.join(model)}), not a dataset: prepare into "
                         f"another folder")
    stage = os.path.join(data_dir, '.prepare.new')
    for path in filter(None, inputs):  # what the clean-up below or the swap would remove
        where, name = os.path.split(os.path.realpath(path))
        base, _, pid = name.rpartition('.tmp')
        ours = where == os.path.realpath(data_dir) and bool(DATASET_RE.match(name) or
                                                            pid.isdigit() and DATASET_RE.match(base))
        if ours or (os.path.realpath(path) + os.sep).startswith(os.path.realpath(stage) + os.sep):
            raise SystemExit(f"error: --input {path} is a file this prepare replaces or removes in {data_dir}: copy "
                             f"it elsewhere first, or choose another out_dir")
    for name, ours in (('meta.json', _a_datasets_meta), ('meta.pkl', _a_vocabulary)):  # what the swap would replace
        if os.path.isfile(os.path.join(data_dir, name)) and not ours(os.path.join(data_dir, name)):
            raise SystemExit(f"error: {os.path.join(data_dir, name)} is not a dataset's {name}, and this prepare "
                             f"would replace it: move it elsewhere, or choose another out_dir")
    lock = open_regular(os.path.join(data_dir, '.prepare.lock'), 'a+')
    if not lock_nowait(lock):
        lock.close()
        raise SystemExit(f"error: another prepare is writing the dataset in {data_dir}: wait for it to end")
    # what a prepare that died left (the lock says none is running): its staging folder, its temporary files
    if os.path.lexists(stage) and not stat.S_ISDIR(os.lstat(stage).st_mode):
        os.remove(stage)  # a link, a file, a FIFO (which rmtree would open, and wait on forever)
    elif os.path.isdir(stage) and not os.path.exists(os.path.join(stage, STAGED)):
        lock.close()  # a folder someone made there (a run's out_dir, an export): never removed
        raise SystemExit(f"error: {stage} is not a prepare's staging folder, and this prepare would need its name: "
                         f"move it elsewhere")
    shutil.rmtree(stage, ignore_errors=True)
    for name in os.listdir(data_dir):
        if DATASET_RE.match(name.rpartition('.tmp')[0]) and stale_temporary(os.path.join(data_dir, name)):
            os.remove(os.path.join(data_dir, name))
        elif name.startswith(CACHE) and ended(name[len(CACHE):]) and not os.path.islink(os.path.join(data_dir, name)):
            shutil.rmtree(os.path.join(data_dir, name), ignore_errors=True)  # a killed prepare's input cache
        elif DATASET_RE.match(name):  # what the swap will replace: refused now, not after the whole prepare
            check_destination(os.path.join(data_dir, name))
    os.mkdir(stage)
    with atomic_path(os.path.join(stage, STAGED)) as tmp, open(tmp, 'w'):
        pass  # the mark: this folder is a prepare's, which a later one may remove
    done = False
    try:
        yield stage
        with _signals_held():  # a signal now is acted on once the swap is done: never half a swap
            _swap(stage, data_dir)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        lock.close()
        if not done and set(os.listdir(data_dir)) - {f'{CACHE}{os.getpid()}'} == {'.prepare.lock'}:
            os.remove(os.path.join(data_dir, '.prepare.lock'))  # a folder that was empty, or new, is again
            if made:
                os.rmdir(data_dir)


@contextmanager
def _signals_held():
    """Ctrl-C, SIGTERM and SIGHUP received during the block are acted on after it, through the handlers in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    signums = [getattr(signal, name) for name in ('SIGINT', 'SIGTERM', 'SIGHUP') if hasattr(signal, name)]
    held = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in signums}
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)


def _a_datasets_meta(path: str) -> bool:
    """Whether meta.json at path is a prepare's (whole, incomplete or damaged in a field): a JSON object with one of
    its fields."""
    try:
        with open_source(path, 'rb') as f:
            meta = json.loads(f.read())
    except ValueError:
        return False
    return isinstance(meta, dict) and bool(set(meta) & set(META))


def _a_vocabulary(path: str) -> bool:
    """Whether meta.pkl at path is a character vocabulary (nanoGPT's dict with itos or stoi), read as plain data."""
    try:
        with open_source(path, 'rb') as f:
            vocab = _PlainUnpickler(f).load()
    except Exception:  # not a pickle, or one naming a class: no vocabulary
        return False
    return isinstance(vocab, dict) and bool({'itos', 'stoi'} & set(vocab))


def _swap(stage: str, data_dir: str):
    """The staged dataset's files into data_dir, and the old dataset's out: meta.json is marked incomplete first
    and written last, so a reader meanwhile refuses the folder instead of reading a mix."""
    old = [name for name in os.listdir(data_dir) if DATASET_RE.match(name)]
    new = [name for name in os.listdir(stage) if DATASET_RE.match(name)]
    for name in {*old, *new, 'meta.json'}:  # checked again: a folder or a link put there since the start
        check_destination(os.path.join(data_dir, name))
    # first, whatever the folder held (nothing, or a nanoGPT dataset without meta.json): a swap cut short leaves a
    # folder every reader refuses, never part of a dataset read unchecked
    with atomic_path(os.path.join(data_dir, 'meta.json')) as tmp, open(tmp, 'w') as f:
        json.dump({'complete': False}, f)
    for name in sorted(new, key=lambda n: n == 'meta.json'):  # meta.json last
        os.replace(os.path.join(stage, name), os.path.join(data_dir, name))
    for name in set(old) - set(new):
        os.remove(os.path.join(data_dir, name))


def write_meta(data_dir: str, **fields):
    """meta.json, the last file a prepare writes (atomically): tokenizer, vocab_size, token counts and the
    fingerprint of every file of the dataset, so a loader can tell one prepare's dataset from a mix of two."""
    for split in ('train', 'val'):  # refused here, in the staging folder: the dataset in place stays
        n = fields.get('tokens', {}).get(split, 0)
        if n < 2:
            raise SystemExit(f"error: the {split} split would hold {n} token(s), too few to train or evaluate on: "
                             f"give a larger input (the dataset in {os.path.dirname(data_dir)} is left as it was)")
    fields['files'] = {os.path.basename(p): fingerprint(p) for p in dataset_files(data_dir)}
    fields['complete'] = True
    with atomic_path(os.path.join(data_dir, 'meta.json')) as tmp, open(tmp, 'w') as f:
        json.dump(fields, f, indent=2)


# the fields of meta.json that are read, and what each must be
META = dict(complete=fields.BOOL, tokenizer=("'gpt2' or 'char'", lambda v: v in ('gpt2', 'char')), chars=fields.CHARS,
            vocab_size=fields.POSITIVE_INT,
            tokens=fields.DICT, files=('a dict of file names to fingerprints', lambda v: isinstance(v, dict) and all(
                isinstance(name, str) and isinstance(print_, str) for name, print_ in v.items())))


def read_meta(data_dir: str) -> dict | None:
    """The dataset's meta.json, or None when it has none (nanoGPT's datasets)."""
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.exists(path):
        return None
    # an export's meta.json (sample.py --init_from=FOLDER) is made again by exporting, a dataset's by preparing
    fix = "export the model again with export_hf.py" if os.path.exists(os.path.join(data_dir, 'config.json')) else \
        f"prepare the dataset again ({prepare_hint(data_dir)})"
    meta = read_json(path, 'meta.json', fix)
    if not isinstance(meta, dict):
        raise SystemExit(f"error: {path} holds a JSON {type(meta).__name__}, not the object a prepare writes: "
                         f"{fix}")
    if not set(meta) & set(META):  # bench results, another tool's file: nothing a prepare wrote
        raise SystemExit(f"error: {path} is not a dataset's meta.json (its fields: {', '.join(sorted(meta)[:6])}): "
                         f"move it out of the dataset folder")
    fields.check(meta, META, path, fix)
    chars = meta.get('chars')  # the fields that must agree with each other: characters, their count, the tokenizer
    agree = chars is None or (meta.get('tokenizer', 'char'), meta.get('vocab_size', len(chars))) == ('char', len(chars))
    if not agree:
        raise SystemExit(f"error: {path} does not agree with itself: {len(chars)} characters, vocab_size "
                         f"{meta.get('vocab_size')!r}, tokenizer {meta.get('tokenizer')!r}; {fix}")
    return meta


def _check_files(data_dir: str, meta: dict | None, note, opened: dict):
    """SystemExit unless the dataset's files are those its meta.json lists (the ones opened, {name: file}, as they
    were opened), and its shards are numbered without a gap; a note where nothing can be checked (datasets without a
    meta.json, such as nanoGPT's)."""
    names = [os.path.basename(p) for split in ('train', 'val') for p in split_files(data_dir, split)]
    numbers = sorted(int(SHARD_RE.match(name).group(2)) for name in names if SHARD_RE.match(name))
    missing = sorted(set(range(numbers[-1] + 1)) - set(numbers)) if numbers else []
    if missing:
        raise SystemExit(f"error: {data_dir} has shards up to number {numbers[-1]} but not {missing[0]:06d} "
                         f"({len(missing)} missing): a download or copy is incomplete; prepare it again "
                         f"({prepare_hint(data_dir)})")
    if meta is not None and meta.get('complete') is False:
        raise SystemExit(f"error: the dataset in {data_dir} is incomplete (its prepare was interrupted): "
                         f"prepare it again ({prepare_hint(data_dir)})")
    if meta is None or meta.get('files') is None:
        note(f"note: {data_dir} has no {'meta.json' if meta is None else 'file list in meta.json'} (prepared by "
             f"nanoGPT or an older prepare): its files are read unchecked for a mix of two prepares")
        return
    listed = meta['files']
    present = {os.path.basename(p): p for p in dataset_files(data_dir)}
    for name in sorted(set(listed) | set(present)):
        if name not in present:
            why = 'is missing'
        elif name not in listed:
            why = 'was not written by the prepare that wrote meta.json'
        elif fingerprint(present[name], opened.get(name)) != listed[name]:
            why = 'changed since the prepare that wrote meta.json'
        else:
            continue
        raise SystemExit(f"error: {os.path.join(data_dir, name)} {why}, so the dataset mixes two prepares: "
                         f"prepare it again ({prepare_hint(data_dir)})")


class Dataset:
    """The one reader of a prepared dataset, through which every script opens one (train.py and bench.py through
    TokenLoader, perplexity.py directly): opening it applies every check of the contract above, once.
        vocab      the character vocabulary (index -> character), None for GPT-2 BPE
        tokenizer  'char', or the BPE named by meta.json ('gpt2' when it names none)"""

    def __init__(self, data_dir: str, splits=('train', 'val'), note=print):
        self.dir = data_dir
        self.meta = read_meta(data_dir) if os.path.isdir(data_dir) else None
        self._checked = set()  # (split, vocab_size) whose token ids check_ids has read
        self._splits = {}  # split: (paths, lengths, open files)
        for split in splits:  # present, whole files of uint16
            self.split(split)
        opened = {os.path.basename(p): f for paths, _, files in self._splits.values() for p, f in zip(paths, files)}
        pkl = os.path.join(data_dir, 'meta.pkl')
        if os.path.exists(pkl):  # opened with the token files: checked as it was then
            opened['meta.pkl'] = open_source(pkl, 'rb')
        _check_files(data_dir, self.meta, note, opened)
        # the meta.json read above and the meta.pkl opened with it: one prepare's, throughout
        self.vocab = read_vocab(data_dir, self.meta or {}, opened.get('meta.pkl'))
        if 'meta.pkl' in opened:
            opened['meta.pkl'].close()
        self.tokenizer = 'char' if self.vocab is not None else (self.meta or {}).get('tokenizer', 'gpt2')

    def split(self, split: str) -> tuple[list[str], list[int]]:
        """The token files of a split and their lengths in tokens, found, checked and opened once: a run reads the
        files it opened when it started, whatever happens at their paths later (a prepare run again meanwhile)."""
        if split not in self._splits:
            paths = split_files(self.dir, split)
            if not paths:
                raise SystemExit(f"error: no {split} data in {self.dir} (neither {split}.bin nor {split}_000000.bin..."
                                 f"): {prepare_hint(self.dir)}")
            files = [open_source(path, 'rb') for path in paths]
            lengths = []
            for path, f in zip(paths, files):
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise SystemExit(f"error: {path} is empty: prepare it again ({prepare_hint(self.dir)})")
                if size % 2:
                    raise SystemExit(f"error: {path} has an odd size ({size} bytes), so it is not a uint16 token file:"
                                     f" it may be truncated; prepare it again ({prepare_hint(self.dir)})")
                if os.pread(f.fileno(), 6, 0) == b'\x93NUMPY':  # its header would be read as tokens
                    raise SystemExit(f"error: {path} is a numpy .npy file, not raw uint16 tokens: write it with "
                                     f"np.asarray(tokens, np.uint16).tofile(path), or prepare it again")
                lengths.append(size // 2)
            self._splits[split] = (paths, lengths, files)
        return self._splits[split][:2]

    def tokens(self, split: str, index: int) -> np.memmap:
        """The tokens of the split's index-th file, from the file opened at the start (see split)."""
        file = self._splits[split][2][index]
        try:
            return np.memmap(file, dtype=DTYPE, mode='r')
        except ValueError:  # emptied, or cut to an odd size, since the run opened it
            raise SystemExit(f"error: {file.name} was cut short or written over in place while this run read it (the "
                             f"run keeps files replaced whole, not ones changed in place): prepare the dataset again "
                             f"into a new folder and resume from the last checkpoint") from None

    def check_ids(self, split: str, vocab_size: int, sample: int = 1 << 20):
        """SystemExit if a token id of the split is outside a vocabulary of vocab_size: the start, middle and end
        of each file, enough to catch a dataset made with another tokenizer (files up to 3 x sample: all of it).
        Once per split and vocabulary: train.py's train and eval loaders share the train split."""
        if (split, vocab_size) in self._checked:
            return
        self._checked.add((split, vocab_size))
        whose = "the model's"
        if self.meta and self.meta.get('vocab_size', vocab_size) < vocab_size:  # GPT-2's 50257 in a model of 50304
            vocab_size, whose = self.meta['vocab_size'], "the dataset's (meta.json)"
        for index, (path, n) in enumerate(zip(*self.split(split))):
            data = self.tokens(split, index)
            pieces = [data[:sample], data[n // 2:n // 2 + sample], data[max(n - sample, 0):]]
            top = max(int(p.max()) for p in pieces if p.size)
            del data
            if top >= vocab_size:
                bigger = f"raise --vocab_size to {top + 1} or more, or " if takes('vocab_size') and \
                    whose == "the model's" else ''  # bench.py's model is sized by an option
                raise SystemExit(f"error: {path} holds token id {top}, outside {whose} vocabulary of {vocab_size}: "
                                 f"{bigger}the file is damaged, or the data was prepared with another tokenizer")


def dataset_dir(dataset: str) -> str:
    """data/<dataset> of this repository, or `dataset` itself when it is a path."""
    if not dataset:
        raise SystemExit("error: dataset is empty: give a name (data/<name>) or a folder of token files")
    named = os.path.join(REPO_DIR, 'data', dataset)  # a name is data/<name>'s, whatever folder the cwd holds
    path = dataset if os.sep in dataset or dataset.startswith('.') or (os.path.isdir(dataset) and
                                                                       not os.path.isdir(named)) else named
    if os.path.exists(path) and not os.path.isdir(path):
        raise SystemExit(f"error: dataset {path} is a file, not a dataset folder: pass the folder that holds it")
    return path


def split_files(data_dir: str, split: str) -> list[str]:
    """The token files of a split: <split>.bin, else its numbered shards in order."""
    single = os.path.join(data_dir, f'{split}.bin')
    if os.path.exists(single):
        return [single]
    return sorted(p for p in glob.glob(os.path.join(glob.escape(data_dir), f'{split}_??????.bin'))  # fw[x] is a name
                  if SHARD_RE.match(os.path.basename(p)))


def prepare_hint(data_dir: str) -> str:
    """What to do about a dataset folder that is missing files: its prepare script, a folder of a close name where
    there is no such folder (a misspelt --dataset), else the files to write."""
    script = os.path.join(data_dir, 'prepare.py')
    if unexpanded(data_dir):
        return f"the shell leaves a ~ after = as it is: write --dataset={os.path.expanduser(data_dir)}"
    if os.path.exists(os.path.join(data_dir, 'config.json')):  # an export's folder: its meta.json is export_hf.py's
        return "this is a model's folder (an export), not a dataset's: pass a dataset folder, or if the export is " \
            "damaged, export it again with export_hf.py"
    if any(os.path.exists(os.path.join(data_dir, n)) for n in ('ckpt.pt', 'log.jsonl')):
        return "this is a run's folder (an out_dir), not a dataset's: pass the folder the run trained on"
    if os.path.exists(script):
        inside = os.path.abspath(script).startswith(REPO_DIR + os.sep)
        return f"run python {os.path.relpath(script, REPO_DIR) if inside else script}"
    parent = os.path.dirname(os.path.abspath(data_dir))
    if not os.path.isdir(data_dir) and os.path.isdir(parent):
        import difflib
        close = difflib.get_close_matches(os.path.basename(data_dir), sorted(  # datasets, or data/<name> to prepare
            n for n in os.listdir(parent) if split_files(os.path.join(parent, n), 'train') or
            os.path.isfile(os.path.join(parent, n, 'prepare.py'))), n=1)
        if close:  # a name of data/ as a name, a path as a path
            named = close[0] if parent == os.path.join(REPO_DIR, 'data') else os.path.join(parent, close[0])
            return f"there is no such folder: did you mean --dataset={named}?"
    here = os.path.join('data', os.path.basename(os.path.normpath(data_dir)))  # ./data/<name> of the cwd
    if not os.path.isdir(data_dir) and os.path.isdir(here) and os.path.abspath(here) != os.path.abspath(data_dir):
        return f"there is no such folder; the one in this folder is --dataset={here}"
    if os.path.exists(os.path.join(data_dir, 'meta.json')):  # a prepare wrote it: one of data/*/prepare.py
        return f"run the data/<name>/prepare.py that made it with --out_dir={data_dir}"
    return f"write {data_dir}/train.bin and val.bin (uint16 token ids) or shards, see nanogpt/tokenfiles.py"


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: any class or function in the file is refused, so
    loading cannot run code from it."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, and only plain data is loaded")


def read_vocab(data_dir: str, meta: dict | None = None, pkl_file=None) -> list[str] | None:
    """The character vocabulary of a dataset (index -> character): meta.json's 'chars', else nanoGPT's meta.pkl
    read as plain data only. None when the dataset has neither (GPT-2 BPE). meta: its meta.json, when already read;
    pkl_file: its meta.pkl, when already open."""
    meta = (read_meta(data_dir) if meta is None else meta) or {}
    if meta.get('complete') is False:  # the characters of a dataset half prepared are no vocabulary
        raise SystemExit(f"error: the dataset in {data_dir} is incomplete (its prepare was interrupted): "
                         f"prepare it again ({prepare_hint(data_dir)})")
    pkl_path = os.path.join(data_dir, 'meta.pkl')
    if meta.get('chars') is not None:
        if (pkl_file or os.path.exists(pkl_path)) and _pkl_vocab(pkl_file or pkl_path) != list(meta['chars']):
            raise SystemExit(f"error: {data_dir}: the characters of meta.json and meta.pkl differ (one of them was "
                             f"edited or comes from another prepare): prepare the dataset again "
                             f"({prepare_hint(data_dir)})")
        return list(meta['chars'])
    if not (pkl_file or os.path.exists(pkl_path)):
        if meta.get('tokenizer') == 'char':
            raise SystemExit(f"error: {data_dir} is character-level data, but its vocabulary (meta.pkl) is "
                             f"missing: prepare the dataset again ({prepare_hint(data_dir)})")
        return None
    if meta.get('tokenizer', 'char') != 'char':
        raise SystemExit(f"error: {data_dir}/meta.json says the tokenizer is {meta['tokenizer']!r}, but meta.pkl "
                         f"beside it holds a character vocabulary: prepare the dataset again "
                         f"({prepare_hint(data_dir)}), or remove the file that does not belong")
    return _pkl_vocab(pkl_file or pkl_path)


def _pkl_vocab(pkl) -> list[str]:
    """nanoGPT's meta.pkl (a path, or the file open) read as plain data only: its itos in order, which its stoi must
    invert (nanoGPT's prepare encoded with stoi)."""
    pkl_path = pkl if isinstance(pkl, str) else pkl.name
    try:
        if isinstance(pkl, str):
            with open_source(pkl, 'rb') as f:
                pkl = _PlainUnpickler(f).load()
        else:
            pkl.seek(0)
            pkl = _PlainUnpickler(pkl).load()
        itos = pkl['itos']
        vocab = [itos[i] for i in range(pkl['vocab_size'])]
    except KeyError as e:  # no itos or vocab_size, or an itos without that id (keyed by strings, say)
        what = f"its itos has no id {e}" if e.args[0] not in ('itos', 'vocab_size') else f"it has no {e}"
        raise SystemExit(f"error: {pkl_path}: {what} (nanoGPT's meta.pkl maps ids 0, 1, ... to characters in "
                         f"'itos', with their count in 'vocab_size'): prepare the dataset again") from None
    except Exception as e:
        raise SystemExit(f"error: {pkl_path} is refused ({type(e).__name__}: {e}): a character vocabulary is a dict "
                         f"of plain data; prepare the dataset again") from None
    fields.check({'itos': vocab}, {'itos': fields.CHARS}, pkl_path, "prepare the dataset again")
    if 'stoi' in pkl and pkl['stoi'] != {ch: i for i, ch in enumerate(vocab)}:
        raise SystemExit(f"error: {pkl_path}: its stoi and itos disagree, so the ids' characters are unknown; prepare "
                         f"the dataset again")
    return vocab
