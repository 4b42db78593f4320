"""
What the prepare scripts share beyond the token-file contract (nanogpt/tokenfiles.py): the 90/10 split
of the two Shakespeare scripts, loading a corpus with `datasets` (the hub, or local files), and GPT-2
BPE tokenization of many documents in parallel, in order. Torch-free, like the prepare scripts.
"""

import atexit
import glob
import os
import shutil
import signal
from multiprocessing import Pool

import numpy as np

from nanogpt.errors import causes
from nanogpt.files import download, make_folder, open_source, read_text, tilde
from nanogpt.tokenfiles import CACHE, DTYPE, TokenWriter
from nanogpt.tokenizer import gpt2_encoding

SHAKESPEARE_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'


def shakespeare_splits(input: str, out_dir: str, script: str) -> dict:
    """nanoGPT's 90/10 split of the text of the Shakespeare prepare scripts: input, else input.txt in out_dir,
    downloaded from char-rnn when missing."""
    make_folder(out_dir, 'out_dir', create=False)  # refused now, not after the input is read
    path = input or os.path.join(out_dir, 'input.txt')
    if not input and not os.path.exists(path):
        download(SHAKESPEARE_URL, path, f"Offline, pass a local copy: python {script} --input PATH", 'out_dir')
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
    written = documents = 0
    t0 = time.time()
    # the workers leave Ctrl-C to this process, which stops them: one that died of it mid-task could hang the pool
    with Pool(num_proc, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool, \
            tqdm(total=total, unit='docs', desc=desc) as bar:
        try:
            for ids in pool.imap(_tokenize, texts, chunksize=16):
                writer.write(ids)
                written += ids.size
                documents += ids.size > 1  # more than its <|endoftext|>
                bar.update(1)
        except ValueError as e:  # the dataset being prepared is dropped whole; the folder keeps the one it had
            raise SystemExit(f"error: {e}: fix the input (the dataset folder was left as it was)") from None
    if not documents:
        raise SystemExit("error: every document's text is empty: nothing to prepare (the dataset folder was left as "
                         "it was)")
    dt = time.time() - t0
    print(f"{desc}: {written:,} tokens in {dt:.1f}s ({written / dt:,.0f} tokens/s with {num_proc} processes)")
    return written


def local_cache(out_dir: str) -> str:
    """A folder for `datasets`' Arrow copy of local input files, inside out_dir (in ~/.cache/huggingface a corpus-sized
    copy would stay behind): removed when the prepare ends, however it ends but a kill, when the next prepare
    (preparing()) removes it; so is out_dir, if it is new and left empty (a prepare that failed)."""
    made = not os.path.isdir(out_dir)
    cache = os.path.join(make_folder(out_dir, 'out_dir'), f'{CACHE}{os.getpid()}')
    os.makedirs(cache, exist_ok=True)

    def remove():
        shutil.rmtree(cache, ignore_errors=True)
        if made and not os.listdir(out_dir):
            os.rmdir(out_dir)
    atexit.register(remove)
    return cache


def check_utf8(path: str, piece: int = 1 << 24):
    """SystemExit naming path and the byte where it stops being UTF-8, read in pieces (a corpus need not fit in
    memory)."""
    import codecs
    decoder, at = codecs.getincrementaldecoder('utf-8')(), 0
    with open_source(path, 'rb') as f:
        while True:
            block = f.read(piece)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                if b'\x00' in block[:4096]:  # binary: a token file, say, which no conversion makes text
                    raise SystemExit(f"error: {path} is not text (NUL bytes, and not UTF-8): a token file? give the "
                                     f"text it was made from") from None
                raise SystemExit(f"error: {path} is not UTF-8 text (byte {at + e.start:,}: {e.reason}): convert it, "
                                 f"e.g. with iconv -t utf-8 (the dataset folder was left as it was)") from None
            if not block:
                return
            at += len(block)


def load_text_dataset(hub_name: str, inputs: list[str], num_proc: int, prepare_script: str, out_dir: str,
                      **hub_kwargs):
    """A datasets.Dataset with a 'text' column: from local json/jsonl/txt/parquet files when given (converted in a
    cache folder inside out_dir), else the hub (cached where `datasets` caches it)."""
    import datasets
    if inputs:
        missing = [p for p in inputs if not os.path.exists(p)]
        if missing:
            raise SystemExit(f"error: input files not found: {missing}{tilde(missing[0])}")
        for path in inputs:  # a FIFO or a folder is refused here, not waited on or half-read by `datasets`
            open_source(path, 'rb').close()
        if len({os.stat(p)[1:3] for p in inputs}) < len(inputs):  # one file (a link, another name): in train and val
            raise SystemExit(f"error: --input names a file twice ({' '.join(inputs)}): give each once")
        kinds = {'.json': 'json', '.jsonl': 'json', '.txt': 'text', '.parquet': 'parquet'}
        builders = {kinds.get(os.path.splitext(p)[1].lower()) for p in inputs}
        if len(builders) != 1 or None in builders:
            raise SystemExit(f"error: --input takes files of one kind, .json/.jsonl, .txt or .parquet, got "
                             f"{', '.join(sorted({os.path.splitext(p)[1] or repr('') for p in inputs}))}")
        if all(os.path.getsize(p) == 0 for p in inputs):
            raise SystemExit(f"error: every input file is empty ({', '.join(inputs)}): nothing to prepare")
        builder = builders.pop()
        if builder in ('json', 'text'):  # read through, in pieces: a byte not UTF-8 is named with its file and place
            for path in inputs:
                check_utf8(path)
        kwargs = dict(sample_by='paragraph') if builder == 'text' else {}  # blank lines separate documents
        try:
            # data_files are glob patterns: a name holding [ or * is escaped, to be itself
            ds = datasets.load_dataset(builder, data_files=[glob.escape(p) for p in inputs], split='train',
                                       cache_dir=local_cache(out_dir), **kwargs)
        except Exception as e:  # malformed JSON, a parquet file that is not one, non-UTF-8 text
            # the innermost error says what is wrong (datasets wraps it in DatasetGenerationError)
            if len(inputs) > 1:  # which file: each read alone, the first that fails is named
                for path in inputs:
                    load_text_dataset(hub_name, [path], num_proc, prepare_script, out_dir, **hub_kwargs)
            found = [c for c in causes(e) if str(c).strip()]  # pyarrow's says the row; a fallback reader's, less
            inner = [c for c in found if 'Arrow' in type(c).__name__][:1] or found[-1:] or [e]
            reason = str(inner[0]).strip().splitlines()[0] if str(inner[0]).strip() else ''
            fix = "give files whose records have the same fields (each file may read alone)" \
                if 'cast' in reason.lower() and len(inputs) > 1 else "check the files"
            raise SystemExit(f"error: could not read {', '.join(inputs)} as {builder} ({type(inner[0]).__name__}: "
                             f"{reason[:200]}): {fix}") from None
        if 'text' not in ds.column_names:
            raise SystemExit(f"error: {inputs[0]} has no 'text' field (its fields: {ds.column_names}): name the "
                             f"field of each document's text 'text', the one the prepare scripts read")
        import pyarrow as pa
        import pyarrow.compute as pc
        column = ds.data.column('text')  # checked whole here, before a folder is touched, and the row named
        if not any(test(column.type) for test in (pa.types.is_string, pa.types.is_large_string,
                                                   getattr(pa.types, 'is_string_view', lambda t: False))):
            raise SystemExit(f"error: the 'text' field of {', '.join(inputs)} is not text in every document (its "
                             f"type: {column.type}): fix the input")
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise SystemExit(f"error: document {row + 1:,} of {', '.join(inputs)} (counting from 1, files in the "
                             f"order given) has no text (null): fix the input")
        if len(ds) == 0:
            raise SystemExit(f"error: {', '.join(inputs)} hold no documents: nothing to prepare")
        return ds
    try:
        return datasets.load_dataset(hub_name, split='train', num_proc=num_proc, **hub_kwargs)
    except Exception as e:  # offline, hub errors, a dataset layout this `datasets` cannot read
        reason = ' '.join(str(e).split())[:300]  # one line, however many torch or the hub gave
        raise SystemExit(f"error: could not load {hub_name} from the Hugging Face hub ({type(e).__name__}: {reason}); "
                         f"to prepare local files instead: python {prepare_script} --input FILE [FILE ...] "
                         f"(.jsonl/.json/.parquet with a 'text' field, or .txt)") from None
