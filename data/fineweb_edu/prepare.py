"""
FineWeb-Edu sample-10BT (https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu) with GPT-2 BPE, in shards of
100M uint16 tokens as build-nanogpt makes them: the first shard is the val split (val_000000.bin), the rest train
(train_000001.bin, ...). About 100 shards, 20GB. Each document is followed by <|endoftext|>, as in this project's
other datasets (build-nanogpt puts it before each document instead).

    python data/fineweb_edu/prepare.py --num_proc=16
    python data/fineweb_edu/prepare.py --input docs.parquet --shard_size=1000000    # your own corpus
"""
import argparse
import os
import sys

from nanogpt.errors import one_line_errors
from nanogpt.prepare import load_text_dataset, tokenize_to_files
from nanogpt.ranges import check_ranges
from nanogpt.tokenfiles import TokenWriter, preparing, write_meta

HUB_NAME = 'HuggingFaceFW/fineweb-edu'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', nargs='+', help='local .jsonl/.json/.parquet (a "text" field) or .txt files')
    parser.add_argument('--remote_name', default='sample-10BT', help='the FineWeb-Edu subset')
    parser.add_argument('--shard_size', type=int, default=100_000_000, help='tokens per shard')
    parser.add_argument('--num_proc', type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help='tokenizer processes (good number: about half the CPU cores)')
    parser.add_argument('--out_dir', default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args(argv)
    check_ranges(vars(args), dict(shard_size='> 0', num_proc='> 0'))
    os.makedirs(args.out_dir, exist_ok=True)

    dataset = load_text_dataset(HUB_NAME, args.input, args.num_proc, 'data/fineweb_edu/prepare.py',
                                name=args.remote_name)
    with preparing(args.out_dir) as stage:  # the new dataset replaces the old one whole, at the end
        with TokenWriter(stage, lambda index: 'val' if index == 0 else 'train', args.shard_size) as writer:
            tokenize_to_files(dataset['text'], writer, args.num_proc, total=len(dataset), desc='tokenizing')
        for split in ('val', 'train'):
            print(f"{split}: {writer.counts.get(split, 0):,} tokens")
        if 'train' not in writer.counts:
            print("warning: everything fit in the val shard, so there is no train split: lower --shard_size",
                  file=sys.stderr)
        write_meta(stage, tokenizer='gpt2', vocab_size=50257, tokens=writer.counts,
                   shard_size=args.shard_size, shards=[os.path.basename(p) for p in writer.written])


if __name__ == '__main__':
    one_line_errors()  # no traceback for what the script did not foresee (NANOGPT_DEBUG=1 shows it)
    main()
