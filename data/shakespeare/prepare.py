"""
Prepare Tiny Shakespeare with GPT-2 BPE (tiktoken), for finetuning GPT-2:
train.bin and val.bin of uint16 token ids (no <|endoftext|>: it is one document).

    python data/shakespeare/prepare.py                 # input.txt beside this script, downloaded if missing
    python data/shakespeare/prepare.py --input FILE    # any text file
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.tokenfiles import TokenWriter, read_text, write_meta  # noqa: E402

URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'


def main(argv=None):
    import tiktoken
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', help='a text file to use instead of Tiny Shakespeare')
    parser.add_argument('--out_dir', default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)

    data = read_text(args.input, os.path.join(args.out_dir, 'input.txt'), URL, 'data/shakespeare/prepare.py')
    n = len(data)
    splits = {'train': data[:int(n * 0.9)], 'val': data[int(n * 0.9):]}

    # encode with tiktoken gpt2 bpe
    enc = tiktoken.get_encoding("gpt2")
    counts = {}
    for split, text in splits.items():
        ids = np.array(enc.encode_ordinary(text), dtype=np.uint16)
        print(f"{split} has {len(ids):,} tokens")
        with TokenWriter(args.out_dir, split) as writer:
            writer.write(ids)
        counts[split] = len(ids)
    write_meta(args.out_dir, tokenizer='gpt2', vocab_size=enc.n_vocab, tokens=counts)


if __name__ == '__main__':
    main()

# train.bin has 301,966 tokens
# val.bin has 36,059 tokens
