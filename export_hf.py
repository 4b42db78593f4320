"""
Export a checkpoint of this project as a Hugging Face GPT-2 folder (config.json, model.safetensors and, for GPT-2
BPE models, the tokenizer files), which transformers.GPT2LMHeadModel.from_pretrained(dest) loads with the same
logits, and which GPT.from_pretrained(dest) and sample.py --init_from=dest read back.

    python export_hf.py --out_dir=out --dest=gpt2-mine
    python export_hf.py --out_dir=out --dest=gpt2-mine --trim_vocab=True   # 50304 padded rows back to 50257

A model trained with bias=False gets zero biases, which compute the same function.
"""
import json
import os
import sys

import torch

from common import atomic_path, load_checkpoint, model_from_checkpoint
from configurator import config_defaults, configure

GPT2_VOCAB = 50257
BPE_URL = 'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/'  # tiktoken's source of GPT-2's files

# -----------------------------------------------------------------------------
out_dir = 'out'  # the checkpoint to export is out_dir/ckpt.pt
dest = ''  # the folder to write
trim_vocab = False  # drop the padding rows of a 50304 vocabulary, keeping GPT-2's 50257 tokens
# -----------------------------------------------------------------------------
defaults = config_defaults(globals())


def hf_state_dict(model, vocab_size: int) -> dict:
    """The model's weights under Hugging Face GPT-2 names: Conv1D weights transposed, absent biases as zeros,
    lm_head left out (tied to wte)."""
    transposed = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
    sd = {}
    for name, module in model.named_modules():
        weight = getattr(module, 'weight', None)
        if name == 'lm_head' or not isinstance(weight, torch.Tensor):
            continue
        w = weight.detach()
        sd[f'{name}.weight'] = w.t() if f'{name}.weight'.endswith(transposed) else w
        if name.endswith(('ln_1', 'ln_2', 'ln_f', 'c_attn', 'c_proj', 'c_fc')):
            bias = getattr(module, 'bias', None)
            out_features = w.shape[0]
            sd[f'{name}.bias'] = bias.detach() if bias is not None else torch.zeros(out_features, dtype=w.dtype)
    sd['transformer.wte.weight'] = sd['transformer.wte.weight'][:vocab_size]
    return {k: v.contiguous().clone() for k, v in sd.items()}


def hf_config(model_config, vocab_size: int) -> dict:
    c = model_config
    return {
        'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2',
        'n_layer': c.n_layer, 'n_head': c.n_head, 'n_embd': c.n_embd, 'n_positions': c.block_size,
        'n_ctx': c.block_size, 'vocab_size': vocab_size, 'n_inner': None,
        'activation_function': 'gelu_new', 'layer_norm_epsilon': 1e-5, 'initializer_range': 0.02,
        'resid_pdrop': c.dropout, 'embd_pdrop': c.dropout, 'attn_pdrop': c.dropout,
        'scale_attn_weights': True, 'scale_attn_by_inverse_layer_idx': False, 'reorder_and_upcast_attn': False,
        'tie_word_embeddings': True, 'use_cache': True,
        'bos_token_id': GPT2_VOCAB - 1, 'eos_token_id': GPT2_VOCAB - 1,
    }


def write_file(path: str, data: bytes):
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def write_tokenizer(dest: str, block_size: int) -> bool:
    """GPT-2's vocab.json and merges.txt (tiktoken's encoder.json and vocab.bpe, from its cache or the web)."""
    try:
        from tiktoken.load import read_file_cached
        encoder = read_file_cached(BPE_URL + 'encoder.json')
        merges = read_file_cached(BPE_URL + 'vocab.bpe')
    except Exception as e:
        print(f"warning: GPT-2 tokenizer files unavailable ({type(e).__name__}), exported the model only",
              file=sys.stderr)
        return False
    write_file(os.path.join(dest, 'vocab.json'), encoder)
    write_file(os.path.join(dest, 'merges.txt'), merges)
    tokenizer_config = {'tokenizer_class': 'GPT2Tokenizer', 'model_max_length': block_size,
                        'bos_token': '<|endoftext|>', 'eos_token': '<|endoftext|>', 'unk_token': '<|endoftext|>',
                        'add_prefix_space': False}
    write_file(os.path.join(dest, 'tokenizer_config.json'), json.dumps(tokenizer_config, indent=2).encode())
    return True


def export(ckpt_path: str, dest: str, trim_vocab: bool = False):
    from safetensors.torch import save_file
    checkpoint = load_checkpoint(ckpt_path, 'cpu')
    model = model_from_checkpoint(checkpoint, ckpt_path)
    vocab_size = model.config.vocab_size
    if trim_vocab:
        if vocab_size < GPT2_VOCAB:
            raise SystemExit(f"error: --trim_vocab keeps GPT-2's {GPT2_VOCAB} tokens, but this model has only "
                             f"{vocab_size}")
        vocab_size = GPT2_VOCAB
    os.makedirs(dest, exist_ok=True)
    sd = hf_state_dict(model, vocab_size)
    with atomic_path(os.path.join(dest, 'model.safetensors')) as tmp:
        save_file(sd, tmp, metadata={'format': 'pt'})
    config = hf_config(model.config, vocab_size)
    write_file(os.path.join(dest, 'config.json'), json.dumps(config, indent=2).encode())
    # a character-level model has no Hugging Face tokenizer: its meta.pkl stays the way to encode text
    tokenizer = write_tokenizer(dest, model.config.block_size) if vocab_size >= GPT2_VOCAB else False
    print(f"exported {ckpt_path} ({model.get_num_params() / 1e6:.2f}M parameters, vocabulary {vocab_size}) "
          f"to {dest}{' with the GPT-2 tokenizer' if tokenizer else ''}")


def main(argv: list[str]):
    cfg = configure(defaults, argv)
    if not cfg.dest:
        raise SystemExit("error: pass --dest=DIR, the folder to write the Hugging Face model to")
    export(os.path.join(cfg.out_dir, 'ckpt.pt'), cfg.dest, cfg.trim_vocab)


if __name__ == '__main__':
    main(sys.argv[1:])
