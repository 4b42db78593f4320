"""
Prepare Tiny Shakespeare with GPT-2 BPE (tiktoken), for finetuning GPT-2:
train.bin and val.bin of uint16 token ids (no <|endoftext|>: it is one document).

    python data/shakespeare/prepare.py                 # input.txt beside this script, downloaded if missing
    python data/shakespeare/prepare.py --input FILE    # any text file
"""
import numpy as np

from nanogpt.errors import one_line_errors
from nanogpt.prepare import shakespeare_splits
from nanogpt.tokenfiles import TokenWriter, preparing, write_meta
from nanogpt.tokenizer import gpt2_encoding


def main(argv=None):
    out_dir, splits = shakespeare_splits(__doc__, 'data/shakespeare/prepare.py', argv)

    # encode with tiktoken gpt2 bpe
    enc = gpt2_encoding()
    counts = {}
    with preparing(out_dir) as stage:  # the new dataset replaces the old one whole, at the end
        for split, text in splits.items():
            ids = np.array(enc.encode_ordinary(text), dtype=np.uint16)
            print(f"{split} has {len(ids):,} tokens")
            with TokenWriter(stage, split) as writer:
                writer.write(ids)
            counts[split] = len(ids)
        write_meta(stage, tokenizer='gpt2', vocab_size=enc.n_vocab, tokens=counts)


if __name__ == '__main__':
    one_line_errors()  # no traceback for what the script did not foresee (NANOGPT_DEBUG=1 shows it)
    main()

# train.bin has 301,966 tokens
# val.bin has 36,059 tokens
