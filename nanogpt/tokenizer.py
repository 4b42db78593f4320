"""
Tokens: GPT-2's BPE (tiktoken), a character model's vocabulary, and the check that a model's token ids mean what a
dataset's ids mean.
"""

import os

from nanogpt.tokenfiles import dataset_dir, read_vocab


def gpt2_encoding():
    """tiktoken's GPT-2 BPE, whose files tiktoken downloads once into its cache; offline without them, one line that
    says how to get them."""
    import tiktoken
    try:
        return tiktoken.get_encoding('gpt2')
    except Exception as e:  # requests' connection errors, a cache that cannot be written, ...
        raise SystemExit(f"error: GPT-2's tokenizer files are not in tiktoken's cache and could not be downloaded "
                         f"({type(e).__name__}): go online once, or set TIKTOKEN_CACHE_DIR to a folder holding "
                         f"them") from None


def describe_tokens(vocab: list[str] | None, vocab_size: int) -> str:
    if vocab is not None:
        return f"a vocabulary of {len(vocab)} characters ({''.join(vocab)[:20]!r}...)"
    return "GPT-2's BPE tokens" if vocab_size >= 50257 else f"{vocab_size} character ids (characters unknown)"


def check_tokens(checkpoint: dict, source: str, data):
    """SystemExit unless a model's token ids mean what the dataset's ids mean (the same characters in the same
    order, or both GPT-2 BPE): training on ids that mean other characters would exit 0 and ruin the model."""
    vocab, vocab_size = checkpoint.get('vocab'), checkpoint['model_args']['vocab_size']
    model_char = vocab is not None or vocab_size < 50257
    if model_char != (data.tokenizer == 'char'):
        same = False
    elif vocab is not None and data.vocab is not None:
        same = list(vocab) == list(data.vocab)
    else:  # a character model without its characters (nanoGPT's checkpoints): the sizes must agree
        same = data.vocab is None or vocab_size == len(data.vocab)
        if same and model_char and data.vocab is not None and os.environ.get('RANK', '0') == '0':
            print(f"note: {source} names none of its {vocab_size} characters: its ids are taken to mean those of "
                  f"{data.dir}")
    if not same:
        raise SystemExit(f"error: {source} was trained on {describe_tokens(vocab, vocab_size)}, but {data.dir} holds "
                         f"{describe_tokens(data.vocab, 50257 if data.vocab is None else len(data.vocab))} (prepared "
                         f"again, or another dataset): its ids would mean other tokens; use the dataset the model "
                         f"was trained on, or start a new run")


def get_tokenizer(checkpoint: dict | None, note=print):
    """encode(str, what) -> list[int] (what names the text in a refusal) and decode(list[int]) -> str: the character vocabulary the checkpoint carries (or,
    for older checkpoints, its dataset's), else GPT-2's BPE. note prints what it loads (print0 under torchrun)."""
    checkpoint = checkpoint or {}
    chars, source = checkpoint.get('vocab'), checkpoint.get('source', 'the checkpoint')
    dataset = checkpoint.get('config', {}).get('dataset')
    if chars is None and dataset:
        source = dataset_dir(dataset)
        chars = read_vocab(source)
    vocab_size = checkpoint.get('model_args', {}).get('vocab_size', 50304)
    if chars is None and vocab_size < 50257 and 'source' in checkpoint:
        raise SystemExit(f"error: {checkpoint['source']} is a model of {vocab_size} characters, but its folder has "
                         f"no meta.json naming them: export it again with export_hf.py, or copy the meta.json of the "
                         f"dataset it was trained on into the folder")
    if chars is None and vocab_size < 50257:
        raise SystemExit(f"error: the checkpoint's model has a vocabulary of {vocab_size} characters, but neither the "
                         f"checkpoint nor its dataset {dataset!r} holds them: put the dataset's meta.json or meta.pkl "
                         f"back in {dataset_dir(dataset) if dataset else 'its dataset folder'}")
    if chars is not None:
        note(f"Loading meta from {source}...")
        stoi = {c: i for i, c in enumerate(chars)}

        def encode(s: str, what: str = 'the text') -> list[int]:
            unknown = sorted(set(s) - set(stoi))
            if unknown:
                shown = ''.join(unknown[:20]) + ('...' if len(unknown) > 20 else '')
                raise SystemExit(f"error: {what} has characters outside the model's vocabulary of {len(stoi)} "
                                 f"characters from {source}: {shown!r}: leave them out, or use a model trained on "
                                 f"them")
            return [stoi[c] for c in s]

        def decode(ids: list[int]) -> str:
            return ''.join(chars[i] for i in ids)
        return encode, decode

    enc = gpt2_encoding()
    # a model trained with the padded vocabulary (50304) may, rarely, emit an id the tokenizer does not have
    return (lambda s, what='': enc.encode(s, allowed_special={'<|endoftext|>'})), \
        (lambda ids: enc.decode([i for i in ids if i < enc.n_vocab]))
