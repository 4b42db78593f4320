"""
Export a checkpoint of this project as a Hugging Face GPT-2 folder (config.json, model.safetensors and, for GPT-2
BPE models, the tokenizer files; for character-level models, meta.json with the characters, as a dataset's), which
transformers.GPT2LMHeadModel.from_pretrained(dest) loads with the same logits, and which GPT.from_pretrained(dest)
and sample.py --init_from=dest read back.

    python export_hf.py --out_dir=out --dest=gpt2-mine
    python export_hf.py --out_dir=out --dest=gpt2-mine --trim_vocab=True   # 50304 padded rows back to 50257

A model trained with bias=False gets zero biases, which compute the same function.
"""
import os
import sys

from configurator import config_defaults, configure
from nanogpt.checkpoint import load_checkpoint, model_from_checkpoint
from nanogpt.errors import one_line_errors
from nanogpt.files import make_folder, new_folder
from nanogpt.tokenfiles import dataset_dir, read_vocab
from nanogpt.weights import GPT2_VOCAB, write_json, write_pretrained

# -----------------------------------------------------------------------------
out_dir = 'out'  # the checkpoint to export is out_dir/ckpt.pt
dest = ''  # the folder to write
trim_vocab = False  # drop the padding rows of a 50304 vocabulary, keeping GPT-2's 50257 tokens
# -----------------------------------------------------------------------------
defaults = config_defaults(globals())


def export(ckpt_path: str, dest: str, trim_vocab: bool = False):
    checkpoint = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(checkpoint, ckpt_path)
    vocab_size = model.config.vocab_size
    if trim_vocab:
        if vocab_size < GPT2_VOCAB:
            raise SystemExit(f"error: --trim_vocab keeps GPT-2's {GPT2_VOCAB} tokens, but this model has only "
                             f"{vocab_size}")
        vocab_size = GPT2_VOCAB
    chars = checkpoint.get('vocab')
    if chars is None and vocab_size < GPT2_VOCAB:  # an older checkpoint's characters are its dataset's
        dataset = checkpoint.get('config', {}).get('dataset')
        chars = read_vocab(dataset_dir(dataset)) if dataset else None
        if chars is None:
            raise SystemExit(f"error: {ckpt_path} is a model of {vocab_size} characters that names none of them, "
                             f"nor a dataset that does: put its dataset's meta.pkl back in {dataset_dir(dataset)}")
    make_folder(dest, 'dest', create=False)  # a file there or above it, a ~ the shell left
    dest = os.path.abspath(dest)  # 'dest/.' and 'dest/' name dest itself
    if os.path.islink(dest) or dest == os.getcwd():  # a link would be replaced, the cwd cannot be
        raise SystemExit(f"error: --dest={dest} is {'a symbolic link' if os.path.islink(dest) else 'this folder'}: "
                         f"choose a new folder")
    if os.path.lexists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        # writing into it would mix our files with what is there (a stale tokenizer, other weights)
        raise SystemExit(f"error: --dest={dest} already exists and is not an empty folder: choose a new folder, "
                         f"or remove it first")
    with new_folder(dest, 'dest') as stage:  # written whole, then renamed: never half an export at dest
        tokenizer = write_pretrained(model, stage, vocab_size)
        if chars is not None:  # a character-level model: its characters, read as a dataset's are
            write_json(os.path.join(stage, 'meta.json'), {'tokenizer': 'char', 'vocab_size': vocab_size,
                                                          'chars': ''.join(chars)})
    print(f"exported {ckpt_path} ({model.get_num_params() / 1e6:.2f}M parameters, vocabulary {vocab_size}) "
          f"to {dest}{' with the GPT-2 tokenizer' if tokenizer else ''}")


def main(argv: list[str]):
    cfg = configure(defaults, argv)
    if not cfg.dest:
        raise SystemExit("error: pass --dest=DIR, the folder to write the Hugging Face model to")
    export(os.path.join(cfg.out_dir, 'ckpt.pt'), cfg.dest, cfg.trim_vocab)


if __name__ == '__main__':
    one_line_errors(defaults)
    main(sys.argv[1:])
