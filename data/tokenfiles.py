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

The writer (TokenWriter, tokenize_to_files) serves the prepare scripts; the reader (TokenLoader) serves
train.py and bench.py: it checks what it opens and draws batches from a numbered stream whose position it saves.
"""

import glob
import json
import os
import re
import sys
from multiprocessing import Pool

import numpy as np
import torch

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_DIR not in sys.path:  # prepare scripts run as `python data/<name>/prepare.py`
    sys.path.insert(0, REPO_DIR)
from common import atomic_path, download  # noqa: E402

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
            for path in glob.glob(os.path.join(self.data_dir, '*_??????.bin')):
                if SHARD_RE.match(os.path.basename(path)) and path not in self.written:
                    os.remove(path)
        return False


def write_meta(data_dir: str, **fields):
    """meta.json beside the token files (tokenizer, vocab_size, token counts), written atomically."""
    path = os.path.join(data_dir, 'meta.json')
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(fields, f, indent=2)


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
    with open(path, 'r', encoding='utf-8') as f:
        text = f.read()
    n = len(text)
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
        ds = datasets.load_dataset(builder, data_files=inputs, split='train', **kwargs)
        if 'text' not in ds.column_names:
            raise SystemExit(f"error: {inputs[0]} has no 'text' field (its fields: {ds.column_names})")
        return ds
    try:
        return datasets.load_dataset(hub_name, split='train', num_proc=num_proc, **hub_kwargs)
    except Exception as e:  # offline, hub errors, a dataset layout this `datasets` cannot read
        raise SystemExit(f"error: could not load {hub_name} from the Hugging Face hub ({type(e).__name__}: {e}).\n"
                         f"To prepare local files instead: python {prepare_script} --input FILE [FILE ...] "
                         f"(.jsonl/.json/.parquet with a 'text' field, or .txt)") from None


# -----------------------------------------------------------------------------
# reading: the loader used by train.py and bench.py

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


class TokenLoader:
    """Random (B, T) windows of a split, like nanoGPT's get_batch, drawn from a numbered stream of batches: batch g
    depends on (seed, g) alone. Rank r of world_size reads batches r, r + world_size, ..., so the ranks read
    different data, and together they read what one process with world_size times the accumulation reads.
    state_dict() is the position in the stream: a resumed run continues with the very batches it would have drawn."""

    def __init__(self, data_dir: str, split: str, batch_size: int, block_size: int, vocab_size: int | None = None,
                 device='cpu', seed: int = 1337, rank: int = 0, world_size: int = 1):
        self.batch_size, self.block_size = batch_size, block_size
        self.device = torch.device(device)
        self.paths = split_files(data_dir, split)
        if not self.paths:
            raise SystemExit(f"error: no {split} data in {data_dir} (neither {split}.bin nor {split}_000000.bin...): "
                             f"{prepare_hint(data_dir)}")
        self.lengths = []
        for path in self.paths:
            size = os.path.getsize(path)
            if size % 2:
                raise SystemExit(f"error: {path} has an odd size ({size} bytes), so it is not a uint16 token file: "
                                 f"it may be truncated; {prepare_hint(data_dir)} again")
            self.lengths.append(size // 2)
        # a window of block_size + 1 tokens (inputs and shifted targets) must fit in a file
        self.windows = np.array([max(n - block_size, 0) for n in self.lengths], dtype=np.int64)
        if self.windows.sum() == 0:
            raise SystemExit(f"error: {split} data in {data_dir} has {max(self.lengths)} tokens in its largest file, "
                             f"too few for one block of {block_size} + 1: lower block_size or prepare more data")
        self.offsets = np.concatenate([[0], np.cumsum(self.windows)])
        if vocab_size is not None:
            self._check_vocab(vocab_size)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.next = 0  # the stream's next batch number, the same on every rank

    def _check_vocab(self, vocab_size: int, sample: int = 1 << 20):
        # the start, middle and end of each file: enough to catch a dataset made with another tokenizer
        for path, n in zip(self.paths, self.lengths):
            data = np.memmap(path, dtype=DTYPE, mode='r')
            pieces = [data[:sample], data[n // 2:n // 2 + sample], data[max(n - sample, 0):]]
            top = max(int(p.max()) for p in pieces if p.size)
            del data
            if top >= vocab_size:
                raise SystemExit(f"error: {path} holds token id {top}, outside the model's vocabulary of {vocab_size}: "
                                 f"the data was prepared with another tokenizer, or vocab_size is wrong")

    def next_batch(self):
        B, T = self.batch_size, self.block_size
        g = self.next + self.rank
        self.next += self.world_size
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + g) % (1 << 63))
        starts = torch.randint(int(self.offsets[-1]), (B,), generator=generator).numpy()
        files = np.searchsorted(self.offsets, starts, side='right') - 1
        # fresh memmaps per batch: a long-lived one grows the resident memory, see
        # https://stackoverflow.com/questions/45132940/numpy-memmap-memory-usage-want-to-iterate-once/61472122#61472122
        maps = {f: np.memmap(self.paths[f], dtype=DTYPE, mode='r') for f in set(files.tolist())}
        rows = [maps[f][s - self.offsets[f]:s - self.offsets[f] + T + 1].astype(np.int64) for f, s in zip(files, starts)]
        del maps
        batch = torch.from_numpy(np.stack(rows))
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        if self.device.type == 'cuda':
            # pin arrays x,y, which allows us to move them to GPU asynchronously (non_blocking=True)
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x.to(self.device), y.to(self.device)

    def state_dict(self) -> dict:
        return {'next': self.next, 'seed': self.seed}

    def load_state_dict(self, state: dict):
        self.next, self.seed = state['next'], state['seed']
