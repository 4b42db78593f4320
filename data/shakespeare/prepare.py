"""
Prepare Tiny Shakespeare with GPT-2 BPE (tiktoken), for finetuning GPT-2:
train.bin and val.bin of uint16 token ids (no <|endoftext|>: it is one document).

    python data/shakespeare/prepare.py                 # input.txt beside this script, downloaded if missing
    python data/shakespeare/prepare.py --input FILE    # any text file
"""
import os
import sys

import numpy as np

from configurator import config_defaults, configure
from nanogpt.errors import one_line_errors
from nanogpt.prepare import shakespeare_splits
from nanogpt.tokenfiles import TokenWriter, preparing, write_meta
from nanogpt.tokenizer import gpt2_encoding

# -----------------------------------------------------------------------------
input = ''  # a text file to use instead of Tiny Shakespeare (input.txt in out_dir, downloaded if missing)
out_dir = os.path.dirname(os.path.abspath(__file__))  # where the dataset is written
# -----------------------------------------------------------------------------
defaults = config_defaults(globals())


def main(argv: list[str]):
    cfg = configure(defaults, argv)
    splits = shakespeare_splits(cfg.input, cfg.out_dir, 'data/shakespeare/prepare.py')

    # encode with tiktoken gpt2 bpe
    enc = gpt2_encoding()
    counts = {}
    with preparing(cfg.out_dir, [cfg.input]) as stage:  # the new dataset replaces the old one whole, at the end
        for split, text in splits.items():
            ids = np.array(enc.encode_ordinary(text), dtype=np.uint16)
            print(f"{split} has {len(ids):,} tokens")
            with TokenWriter(stage, split) as writer:
                writer.write(ids)
            counts[split] = len(ids)
        write_meta(stage, tokenizer='gpt2', vocab_size=enc.n_vocab, tokens=counts)


if __name__ == '__main__':
    one_line_errors(defaults)  # no traceback for what the script did not foresee (NANOGPT_DEBUG=1 shows it)
    main(sys.argv[1:])

# train.bin has 301,966 tokens
# val.bin has 36,059 tokens
