"""
Prepare OpenWebText (8,013,769 documents) with GPT-2 BPE: train.bin (~9B tokens, ~17GB) and val.bin (~4M tokens),
each document followed by <|endoftext|>.

    python data/openwebtext/prepare.py --num_proc=16
    python data/openwebtext/prepare.py --input a.jsonl b.jsonl    # your own corpus: .jsonl/.json/.parquet/.txt
    python data/openwebtext/prepare.py --help                     # every option

The hub copy is read as parquet, which current `datasets` releases load (they no longer run dataset scripts).
"""
import math
import os
import sys

from configurator import config_defaults, configure
from nanogpt.errors import one_line_errors
from nanogpt.files import make_folder
from nanogpt.prepare import load_text_dataset, tokenize_to_files
from nanogpt.tokenfiles import TokenWriter, preparing, write_meta

HUB_NAME = 'Skylion007/openwebtext'
N_DOCUMENTS = 8_013_769


# -----------------------------------------------------------------------------
input = []  # local .jsonl/.json/.parquet files (a "text" field) or .txt files, instead of the hub's copy
hub_name = HUB_NAME  # a Hugging Face dataset with a "text" column
revision = ''  # hub revision, e.g. refs/convert/parquet for the hub's own parquet export ('' the default branch)
num_proc = max(1, (os.cpu_count() or 2) // 2)  # tokenizer processes (good number: about half the CPU cores)
val_fraction = 0.0005  # of the documents, for the val split
out_dir = os.path.dirname(os.path.abspath(__file__))  # where the dataset is written
# -----------------------------------------------------------------------------
RANGES = dict(num_proc='> 0', val_fraction='(0, 1)')
defaults = config_defaults(globals())


def main(argv: list[str]):
    cfg = configure(defaults, argv, RANGES)
    make_folder(cfg.out_dir, 'out_dir', create=False)  # refused now, not after the corpus is read
    if cfg.input and (cfg.hub_name != HUB_NAME or cfg.revision):
        raise SystemExit("error: --hub_name and --revision choose a copy on the hub, which --input replaces: give "
                         "one or the other")

    dataset = load_text_dataset(cfg.hub_name, cfg.input, cfg.num_proc, 'data/openwebtext/prepare.py', cfg.out_dir,
                                revision=cfg.revision or None)
    if not cfg.input and cfg.hub_name == HUB_NAME and len(dataset) != N_DOCUMENTS:
        print(f"warning: {cfg.hub_name} has {len(dataset):,} documents, expected {N_DOCUMENTS:,} "
              f"(a partial copy?)", file=sys.stderr)
    n_val = math.ceil(cfg.val_fraction * len(dataset))  # as train_test_split counts it
    if not 0 < n_val < len(dataset):
        txt = ' (in a .txt file a line with nothing on it ends a document)' * any(p.endswith('.txt') for p in cfg.input)
        raise SystemExit(f"error: {len(dataset)} document(s) with val_fraction={cfg.val_fraction} leave "
                         f"{len(dataset) - n_val} for train: lower val_fraction, or give more documents{txt}")

    # owt by default only contains the 'train' split, so create a test split
    split_dataset = dataset.train_test_split(test_size=cfg.val_fraction, seed=2357, shuffle=True)
    split_dataset['val'] = split_dataset.pop('test')  # rename the test split to val

    counts = {}
    with preparing(cfg.out_dir, cfg.input) as stage:  # the new dataset replaces the old one whole, at the end
        for split, dset in split_dataset.items():
            with TokenWriter(stage, split) as writer:
                counts[split] = tokenize_to_files(dset['text'], writer, cfg.num_proc, total=len(dset),
                                                  desc=f'writing {split}.bin')
            print(f"{split}.bin has {counts[split]:,} tokens from {len(dset):,} documents")
        write_meta(stage, tokenizer='gpt2', vocab_size=50257, tokens=counts)


if __name__ == '__main__':
    one_line_errors(defaults)  # no traceback for what the script did not foresee (NANOGPT_DEBUG=1 shows it)
    main(sys.argv[1:])

# train.bin is ~17GB, val.bin ~8.5MB
# train has ~9B tokens (9,035,582,198)
# val has ~4M tokens (4,434,897)
# to read the bin files later, e.g. with numpy:
# m = np.memmap('train.bin', dtype=np.uint16, mode='r')
