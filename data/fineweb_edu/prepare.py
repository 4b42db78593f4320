"""
FineWeb-Edu sample-10BT (https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu) with GPT-2 BPE, in shards of
100M uint16 tokens as build-nanogpt makes them: the first shard is the val split (val_000000.bin), the rest train
(train_000001.bin, ...). About 100 shards, 20GB. Each document is followed by <|endoftext|>, as in this project's
other datasets (build-nanogpt puts it before each document instead).

    python data/fineweb_edu/prepare.py --num_proc=16
    python data/fineweb_edu/prepare.py --input docs.parquet --shard_size=1000000    # your own corpus
    python data/fineweb_edu/prepare.py --help                                       # every option
"""
import os
import sys

from configurator import config_defaults, configure
from nanogpt.errors import one_line_errors
from nanogpt.files import make_folder
from nanogpt.prepare import load_text_dataset, tokenize_to_files
from nanogpt.tokenfiles import TokenWriter, preparing, write_meta

HUB_NAME = 'HuggingFaceFW/fineweb-edu'


# -----------------------------------------------------------------------------
input = []  # local .jsonl/.json/.parquet files (a "text" field) or .txt files, instead of the hub's copy
remote_name = 'sample-10BT'  # the FineWeb-Edu subset
shard_size = 100_000_000  # tokens per shard
num_proc = max(1, (os.cpu_count() or 2) // 2)  # tokenizer processes (good number: about half the CPU cores)
out_dir = os.path.dirname(os.path.abspath(__file__))  # where the dataset is written
# -----------------------------------------------------------------------------
RANGES = dict(shard_size='> 1', num_proc='> 0')  # the val split is the first shard: 2 tokens at least
defaults = config_defaults(globals())


def main(argv: list[str]):
    cfg = configure(defaults, argv, RANGES)
    make_folder(cfg.out_dir, 'out_dir', create=False)  # refused now, not after the corpus is read
    if cfg.input and cfg.remote_name != defaults['remote_name']:
        raise SystemExit("error: --remote_name chooses a subset on the hub, which --input replaces: give one or the "
                         "other")

    dataset = load_text_dataset(HUB_NAME, cfg.input, cfg.num_proc, 'data/fineweb_edu/prepare.py', cfg.out_dir,
                                name=cfg.remote_name)
    with preparing(cfg.out_dir, cfg.input) as stage:  # the new dataset replaces the old one whole, at the end
        with TokenWriter(stage, lambda index: 'val' if index == 0 else 'train', cfg.shard_size) as writer:
            tokenize_to_files(dataset['text'], writer, cfg.num_proc, total=len(dataset), desc='tokenizing')
        for split in ('val', 'train'):
            print(f"{split}: {writer.counts.get(split, 0):,} tokens")
        if 'train' not in writer.counts:  # refused before the swap: the dataset in place stays
            raise SystemExit(f"error: all {writer.counts.get('val', 0):,} tokens fit in the val shard, leaving no "
                             f"train split: lower --shard_size (the dataset in {cfg.out_dir} is left as it was)")
        write_meta(stage, tokenizer='gpt2', vocab_size=50257, tokens=writer.counts,
                   shard_size=cfg.shard_size, shards=[os.path.basename(p) for p in writer.written])


if __name__ == '__main__':
    one_line_errors(defaults)  # no traceback for what the script did not foresee (NANOGPT_DEBUG=1 shows it)
    main(sys.argv[1:])
