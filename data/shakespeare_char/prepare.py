"""
Prepare the Shakespeare dataset for character-level language modeling.
So instead of encoding with GPT-2 BPE tokens, we just map characters to ints.
Will save train.bin, val.bin containing the ids, and meta.pkl containing the
encoder and decoder and some other related info.

    python data/shakespeare_char/prepare.py                 # input.txt beside this script, downloaded if missing
    python data/shakespeare_char/prepare.py --input FILE    # any text file
"""
import os
import pickle
import sys

import numpy as np

from configurator import config_defaults, configure
from nanogpt.errors import one_line_errors
from nanogpt.files import atomic_path
from nanogpt.prepare import shakespeare_splits
from nanogpt.tokenfiles import TokenWriter, preparing, write_meta

# -----------------------------------------------------------------------------
input = ''  # a text file to use instead of Tiny Shakespeare (input.txt in out_dir, downloaded if missing)
out_dir = os.path.dirname(os.path.abspath(__file__))  # where the dataset is written
# -----------------------------------------------------------------------------
defaults = config_defaults(globals())


def main(argv: list[str]):
    cfg = configure(defaults, argv)
    splits = shakespeare_splits(cfg.input, cfg.out_dir, 'data/shakespeare_char/prepare.py')
    data = splits['train'] + splits['val']
    print(f"length of dataset in characters: {len(data):,}")

    # get all the unique characters that occur in this text
    chars = sorted(set(data))
    vocab_size = len(chars)
    if vocab_size > 65536:
        raise SystemExit(f"error: {cfg.input or 'input.txt'} has {vocab_size:,} distinct characters, more than uint16 "
                         f"token ids hold (65,536): a character-level model is not for this text; prepare it with "
                         f"GPT-2 BPE (data/shakespeare/prepare.py --input=...)")
    print("all the unique characters:", ''.join(chars))
    print(f"vocab size: {vocab_size:,}")
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}

    counts = {}
    with preparing(cfg.out_dir, [cfg.input]) as stage:  # the new dataset replaces the old one whole, at the end
        for split, text in splits.items():
            ids = np.array([stoi[c] for c in text], dtype=np.uint16)
            print(f"{split} has {len(ids):,} tokens")
            with TokenWriter(stage, split) as writer:
                writer.write(ids)
            counts[split] = len(ids)

        # save the meta information as well, to help us encode/decode later: meta.json is what this project reads
        # (the characters in order), meta.pkl is nanoGPT's format for its tools
        meta = {'vocab_size': vocab_size, 'itos': itos, 'stoi': stoi}
        with atomic_path(os.path.join(stage, 'meta.pkl')) as tmp, open(tmp, 'wb') as f:
            pickle.dump(meta, f)
        write_meta(stage, tokenizer='char', vocab_size=vocab_size, chars=''.join(chars), tokens=counts)


if __name__ == '__main__':
    one_line_errors(defaults)  # no traceback for what the script did not foresee (NANOGPT_DEBUG=1 shows it)
    main(sys.argv[1:])

# length of dataset in characters:  1,115,394
# all the unique characters:
#  !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
# vocab size: 65
# train has 1,003,854 tokens
# val has 111,540 tokens
