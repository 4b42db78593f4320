"""
What the prepare scripts share beyond the token-file contract (nanogpt/tokenfiles.py): the 90/10 split
of the two Shakespeare scripts, loading a corpus with `datasets` (the hub, or local files), and GPT-2
BPE tokenization of many documents in parallel, in order. Torch-free, like the prepare scripts.
"""

import os
from multiprocessing import Pool

import numpy as np

from nanogpt.files import download, open_source, read_text
from nanogpt.tokenfiles import DTYPE, TokenWriter
from nanogpt.tokenizer import gpt2_encoding

SHAKESPEARE_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'


def shakespeare_splits(input: str, out_dir: str, script: str) -> dict:
    """nanoGPT's 90/10 split of the text of the Shakespeare prepare scripts: input, else input.txt in out_dir,
    downloaded from char-rnn when missing."""
    os.makedirs(out_dir, exist_ok=True)
    path = input or os.path.join(out_dir, 'input.txt')
    if not input and not os.path.exists(path):
        download(SHAKESPEARE_URL, path, f"Offline, pass a local copy: python {script} --input PATH")
    text = read_text(path, 'input file')
    if len(text) < 10:
        raise SystemExit(f"error: {path} holds {len(text)} characters, too few to split into train and val: "
                         f"pass a larger text (the dataset in {out_dir} is left as it was)")
    n = len(text)
    return {'train': text[:int(n * 0.9)], 'val': text[int(n * 0.9):]}


_enc = None


def _tokenize(text: str) -> np.ndarray:
    global _enc
    if not isinstance(text, str):
        raise ValueError(f"a document's text is {text!r}, not a string")
    if _enc is None:
        _enc = gpt2_encoding()
    ids = _enc.encode_ordinary(text)  # special tokens in the text are plain text
    ids.append(_enc.eot_token)  # <|endoftext|> ends every document
    return np.array(ids, dtype=DTYPE)


def tokenize_to_files(texts, writer: TokenWriter, num_proc: int, total: int | None = None, desc: str = 'tokenizing'):
    """GPT-2 BPE of each text followed by <|endoftext|>, written in order through writer; returns tokens written."""
    import time

    from tqdm import tqdm
    gpt2_encoding()  # offline without its files: one line here, not a SystemExit that kills a pool worker (a hang)
    written = 0
    t0 = time.time()
    with Pool(num_proc) as pool, tqdm(total=total, unit='docs', desc=desc) as bar:
        try:
            for ids in pool.imap(_tokenize, texts, chunksize=16):
                writer.write(ids)
                written += ids.size
                bar.update(1)
        except ValueError as e:  # the dataset being prepared is dropped whole; the folder keeps the one it had
            raise SystemExit(f"error: {e}: fix the input (the dataset folder was left as it was)") from None
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
        for path in inputs:  # a FIFO or a folder is refused here, not waited on or half-read by `datasets`
            open_source(path, 'rb').close()
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
