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

The writer (TokenWriter, tokenize_to_files) serves the prepare scripts, which need numpy and tiktoken only: this
module imports no torch. The reader, TokenLoader in data/loader.py, serves train.py and bench.py.
"""

import glob
import json
import os
import re
from contextlib import contextmanager
from multiprocessing import Pool

import numpy as np

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DTYPE = np.uint16
SHARD_RE = re.compile(r'^(train|val)_(\d{6})\.bin$')


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
            for path in glob.glob(os.path.join(self.data_dir, '*_??????.bin')):
                if SHARD_RE.match(os.path.basename(path)) and path not in self.written:
                    os.remove(path)
        return False


def fingerprint(path: str) -> str:
    """Size and a hash of the first and last 64 KiB: tells a file from one another prepare wrote, and survives
    copying (unlike modification times)."""
    import hashlib
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        h.update(f.read(1 << 16))
        f.seek(max(size - (1 << 16), 0))
        h.update(f.read(1 << 16))
    return f"{size}:{h.hexdigest()[:16]}"


def dataset_files(data_dir: str) -> list[str]:
    """The token files of both splits and nanoGPT's meta.pkl, where present."""
    pkl = os.path.join(data_dir, 'meta.pkl')
    return split_files(data_dir, 'train') + split_files(data_dir, 'val') + ([pkl] if os.path.exists(pkl) else [])


def begin_prepare(data_dir: str):
    """Called by a prepare script once its input is known good, before it writes anything: until write_meta ends
    the run, meta.json says the dataset is incomplete, so an interrupted prepare leaves a dataset that is refused."""
    os.makedirs(data_dir, exist_ok=True)
    with atomic_path(os.path.join(data_dir, 'meta.json')) as tmp, open(tmp, 'w') as f:
        json.dump({'complete': False}, f)


def write_meta(data_dir: str, **fields):
    """meta.json, the last file a prepare writes (atomically): tokenizer, vocab_size, token counts and the
    fingerprint of every file of the dataset, so a loader can tell one prepare's dataset from a mix of two."""
    fields['files'] = {os.path.basename(p): fingerprint(p) for p in dataset_files(data_dir)}
    fields['complete'] = True
    with atomic_path(os.path.join(data_dir, 'meta.json')) as tmp, open(tmp, 'w') as f:
        json.dump(fields, f, indent=2)


def read_meta(data_dir: str) -> dict | None:
    """The dataset's meta.json, or None when it has none (nanoGPT's datasets)."""
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: {path} is not valid JSON ({e}): prepare the dataset again "
                         f"({prepare_hint(data_dir)})") from None


def check_dataset(data_dir: str):
    """SystemExit unless the dataset's files are those its meta.json lists (no check for datasets without one,
    such as nanoGPT's)."""
    meta = read_meta(data_dir)
    if meta is None:
        return
    if meta.get('complete') is False:
        raise SystemExit(f"error: the dataset in {data_dir} is incomplete (its prepare was interrupted): "
                         f"prepare it again ({prepare_hint(data_dir)})")
    listed = meta.get('files')
    if listed is None:
        return
    present = {os.path.basename(p): p for p in dataset_files(data_dir)}
    for name in sorted(set(listed) | set(present)):
        if name not in present:
            why = 'is missing'
        elif name not in listed:
            why = 'was not written by the prepare that wrote meta.json'
        elif fingerprint(present[name]) != listed[name]:
            why = 'changed since the prepare that wrote meta.json'
        else:
            continue
        raise SystemExit(f"error: {os.path.join(data_dir, name)} {why}, so the dataset mixes two prepares: "
                         f"prepare it again ({prepare_hint(data_dir)})")


SHAKESPEARE_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'


def shakespeare_splits(doc: str, script: str, argv=None) -> tuple[str, dict]:
    """The command line of the Shakespeare prepare scripts (--input, --out_dir) and nanoGPT's 90/10 split of the
    text: --input, else input.txt beside the script, downloaded from char-rnn when missing."""
    import argparse
    script_dir = os.path.join(REPO_DIR, os.path.dirname(script))
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', help='a text file to use instead of Tiny Shakespeare')
    parser.add_argument('--out_dir', default=script_dir, help='where to write the token files')
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    path = args.input or os.path.join(args.out_dir, 'input.txt')
    if args.input is None and not os.path.exists(path):
        download(SHAKESPEARE_URL, path, f"Offline, pass a local copy: python {script} --input PATH")
    if not os.path.exists(path):
        raise SystemExit(f"error: input file {path} not found")
    try:
        with open(path, 'r', encoding='utf-8') as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: {path} is not UTF-8 text ({e.reason} at byte {e.start}): convert it, e.g. with "
                         f"iconv -t utf-8") from None
    if len(text) < 10:
        raise SystemExit(f"error: {path} holds {len(text)} characters, too few to split into train and val: "
                         f"pass a larger text (the dataset in {args.out_dir} is left as it was)")
    n = len(text)
    begin_prepare(args.out_dir)
    return args.out_dir, {'train': text[:int(n * 0.9)], 'val': text[int(n * 0.9):]}


# -----------------------------------------------------------------------------
# GPT-2 BPE tokenization of many documents, in parallel, in order

_enc = None


def _tokenize(text: str) -> np.ndarray:
    global _enc
    if _enc is None:
        import tiktoken
        _enc = tiktoken.get_encoding('gpt2')
    ids = _enc.encode_ordinary(text)  # special tokens in the text are plain text
    ids.append(_enc.eot_token)  # <|endoftext|> ends every document
    return np.array(ids, dtype=DTYPE)


def tokenize_to_files(texts, writer: TokenWriter, num_proc: int, total: int | None = None, desc: str = 'tokenizing'):
    """GPT-2 BPE of each text followed by <|endoftext|>, written in order through writer; returns tokens written."""
    import time
    from tqdm import tqdm
    written = 0
    t0 = time.time()
    with Pool(num_proc) as pool, tqdm(total=total, unit='docs', desc=desc) as bar:
        for ids in pool.imap(_tokenize, texts, chunksize=16):
            writer.write(ids)
            written += ids.size
            bar.update(1)
    dt = time.time() - t0
    print(f"{desc}: {written:,} tokens in {dt:.1f}s ({written / dt:,.0f} tokens/s with {num_proc} processes)")
    return written


def load_text_dataset(hub_name: str, inputs: list[str], num_proc: int, prepare_script: str, **hub_kwargs):
    """A datasets.Dataset with a 'text' column: from local json/jsonl/txt/parquet files when given, else the hub."""
    import datasets
    if inputs:
        exts = {os.path.splitext(p)[1].lower() for p in inputs}
        builders = {'.json': 'json', '.jsonl': 'json', '.txt': 'text', '.parquet': 'parquet'}
        if len(exts) != 1 or next(iter(exts)) not in builders:
            raise SystemExit(f"error: --input takes files of one kind: .json/.jsonl, .txt or .parquet, got {sorted(exts)}")
        missing = [p for p in inputs if not os.path.exists(p)]
        if missing:
            raise SystemExit(f"error: input files not found: {missing}")
        builder = builders[exts.pop()]
        kwargs = dict(sample_by='paragraph') if builder == 'text' else {}  # blank lines separate documents
        try:
            ds = datasets.load_dataset(builder, data_files=inputs, split='train', **kwargs)
        except Exception as e:  # malformed JSON, a parquet file that is not one, non-UTF-8 text
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ''
            raise SystemExit(f"error: could not read {', '.join(inputs)} as {builder} ({type(e).__name__}: "
                             f"{reason[:200]}): check the files") from None
        if 'text' not in ds.column_names:
            raise SystemExit(f"error: {inputs[0]} has no 'text' field (its fields: {ds.column_names})")
        if len(ds) == 0:
            raise SystemExit(f"error: {', '.join(inputs)} hold no documents: nothing to prepare")
        return ds
    try:
        return datasets.load_dataset(hub_name, split='train', num_proc=num_proc, **hub_kwargs)
    except Exception as e:  # offline, hub errors, a dataset layout this `datasets` cannot read
        raise SystemExit(f"error: could not load {hub_name} from the Hugging Face hub ({type(e).__name__}: {e}).\n"
                         f"To prepare local files instead: python {prepare_script} --input FILE [FILE ...] "
                         f"(.jsonl/.json/.parquet with a 'text' field, or .txt)") from None


# -----------------------------------------------------------------------------
# the files of a split, for the loader

def split_files(data_dir: str, split: str) -> list[str]:
    """The token files of a split: <split>.bin, else its numbered shards in order."""
    single = os.path.join(data_dir, f'{split}.bin')
    if os.path.exists(single):
        return [single]
    return sorted(p for p in glob.glob(os.path.join(data_dir, f'{split}_??????.bin'))
                  if SHARD_RE.match(os.path.basename(p)))


def prepare_hint(data_dir: str) -> str:
    script = os.path.join(data_dir, 'prepare.py')
    if os.path.exists(script):
        inside = os.path.abspath(script).startswith(REPO_DIR + os.sep)
        return f"run python {os.path.relpath(script, REPO_DIR) if inside else script}"
    return f"write {data_dir}/train.bin and val.bin (uint16 token ids) or shards, see data/tokenfiles.py"
