"""
Checkpoints: what out_dir/ckpt.pt holds, written (Checkpointer.save), read back into a model (load_checkpoint,
model_from_checkpoint, load_model, which also takes OpenAI's GPT-2 names and Hugging Face folders), the training
state restored from it (Checkpointer.restore), and the tokenizer that goes with a model (get_tokenizer).

A checkpoint is one torch.save'd dict under nanoGPT's keys, whatever wrote it (one process, DDP or FSDP):
    model          the uncompiled, unwrapped model's state_dict (whole tensors)
    optimizer      AdamW's state_dict (whole tensors)
    model_args     GPTConfig's arguments
    iter_num       the iterations done
    best_val_loss  the lowest val loss seen (only ever lowered)
    config         the run's resolved config
and, for an exact resume: scaler (the float16 GradScaler), loader (the position in the batch stream), rng (every
rank's RNG states), world_size; and vocab, the characters of a character-level model, so sampling needs no dataset.
"""

import os
import pickle
import re
import warnings
from dataclasses import asdict

import torch

from common import dataset_dir, print0
from data.tokenfiles import read_vocab
from model import GPT, GPTConfig
from parallel import full_state_dict, load_optimizer_state, restore_rng, rng_states
from util import atomic_path, gpt2_encoding


def save_checkpoint(path: str, checkpoint: dict):
    """torch.save to a temporary file, renamed into place: a crash mid-save never leaves a broken checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


class Checkpointer:
    """Saves and restores the training state of one run: the live model, optimizer, scaler and loader, and what
    stays fixed for the run (model_args, config, vocab)."""

    def __init__(self, out_dir: str, runtime, raw_model, optimizer, scaler, loader, model_args: dict, config: dict,
                 vocab: list[str] | None):
        self.path = os.path.join(out_dir, 'ckpt.pt')
        self.runtime, self.raw_model, self.optimizer = runtime, raw_model, optimizer
        self.scaler, self.loader = scaler, loader
        self.fixed = {'model_args': model_args, 'config': config, 'vocab': vocab}
        self.saved_iter = None  # the iteration of the checkpoint in out_dir, once there is one

    def save(self, iter_num: int, best_val_loss: float):
        """Write the checkpoint. A collective: every rank calls it (RNG states are gathered, and under FSDP the
        shards too, into whole tensors on rank 0's CPU, as DDP would save them); rank 0 writes."""
        master = self.runtime.master_process
        rng = rng_states(self.runtime)
        model_state = full_state_dict(self.raw_model.state_dict(keep_vars=True), master)
        optimizer_state = full_state_dict(self.optimizer.state_dict(), master)
        if master:
            print(f"saving checkpoint to {os.path.dirname(self.path)}")
            save_checkpoint(self.path, {
                'model': model_state, 'optimizer': optimizer_state, 'scaler': self.scaler.state_dict(),
                'iter_num': iter_num, 'best_val_loss': best_val_loss, 'loader': self.loader.state_dict(),
                'rng': rng, 'world_size': self.runtime.world_size, **self.fixed})
        self.saved_iter = iter_num

    def restore(self, checkpoint: dict):
        """The optimizer (resharded under FSDP), scaler, batch stream position and this rank's RNG states of a
        checkpoint: the run continues as if it had never stopped. The weights are loaded with the model."""
        load_optimizer_state(self.optimizer, checkpoint['optimizer'])
        if 'scaler' in checkpoint:
            self.scaler.load_state_dict(checkpoint['scaler'])
        if 'loader' in checkpoint:  # continue the batch stream instead of replaying it
            self.loader.load_state_dict(checkpoint['loader'])
        restore_rng(checkpoint.get('rng', {}), self.runtime)
        self.saved_iter = checkpoint['iter_num']


def torch_load(path: str, what: str):
    """torch.load of a file from outside, as tensors and plain data only (weights_only), so that loading never runs
    code from it; SystemExit naming the file when it holds anything else or is damaged."""
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's concern
            warnings.simplefilter('ignore')
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r'GLOBAL (\S+)', str(e)) or _code_in(path)  # torch's message names it, or a scan does
        if found is None:
            raise SystemExit(f"error: could not read the {what} {path} (UnpicklingError: {e}): the file is "
                             f"damaged or not a PyTorch {what}") from None
        name = found if isinstance(found, str) else found.group(1)
        raise SystemExit(f"error: refused to load {path}: it holds objects other than tensors and plain data, "
                         f"which could run code when loaded (it refers to {name}); use {what}s you trust, "
                         f"written by this project, nanoGPT or transformers") from None
    except Exception as e:
        raise SystemExit(f"error: could not read the {what} {path} ({type(e).__name__}: {e}): the file is "
                         f"damaged or not a PyTorch {what}") from None


def _code_in(path: str) -> str | None:
    """The first function or class outside torch that a pickle (or a torch zip file's data.pkl) refers to, read
    with pickletools, which executes nothing."""
    import pickletools
    import zipfile
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))
        else:
            with open(path, 'rb') as f:
                data = f.read()
        strings = []
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings.append(arg)
            name = arg.replace(' ', '.') if op.name == 'GLOBAL' else \
                '.'.join(strings[-2:]) if op.name == 'STACK_GLOBAL' else None
            if name and not name.startswith(('torch.', 'collections.OrderedDict', '_codecs.encode')):
                return name
    except Exception:  # not a pickle past some point: what was read held nothing foreign
        pass
    return None


def check_shapes(model_args: dict, shapes: dict, source: str):
    """SystemExit unless the sizes model_args describe (layers, vocabulary, context, width) are those of the
    weights, whose shapes (name -> shape, this model's names) are read before anything is built: a config.json or
    model_args that disagrees with its weights would otherwise allocate what it says first."""
    layers = {int(k.split('.')[2]) for k in shapes if k.startswith('transformer.h.') and k.split('.')[2].isdigit()}
    found = {'n_layer': len(layers)}
    if 'transformer.wte.weight' in shapes:
        found['vocab_size'], found['n_embd'] = shapes['transformer.wte.weight']
    if 'transformer.wpe.weight' in shapes:
        found['block_size'] = shapes['transformer.wpe.weight'][0]
    differ = [f"{k}={model_args.get(k)} (the weights: {v})" for k, v in found.items() if model_args.get(k) != v]
    if differ:
        raise SystemExit(f"error: {source} describes a model its weights are not: {', '.join(differ)}; the files do "
                         f"not belong together: export or download the model again")


def load_checkpoint(ckpt_path: str, takes_init_from: bool = True) -> dict:
    """The checkpoint at ckpt_path, checked to be one; SystemExit naming what to do where there is none (OpenAI's
    weights too, for a script that takes --init_from)."""
    if not os.path.exists(ckpt_path):
        raise SystemExit(f"error: no checkpoint at {ckpt_path}: train one with train.py (out_dir sets where)"
                         f"{', or pass --init_from=gpt2 for OpenAI weights' if takes_init_from else ''}")
    checkpoint = torch_load(ckpt_path, 'checkpoint')
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint or 'model_args' not in checkpoint:
        raise SystemExit(f"error: {ckpt_path} is not a checkpoint of this project (no 'model' and 'model_args')")
    return checkpoint


def model_from_checkpoint(checkpoint: dict, source: str = 'checkpoint') -> GPT:
    """The GPT described by a checkpoint's model_args, with its weights (nanoGPT's checkpoints included)."""
    model_args = checkpoint['model_args']
    known = set(GPTConfig.__dataclass_fields__)
    if set(model_args) - known:
        raise SystemExit(f"error: {source} has model arguments {sorted(set(model_args) - known)} that this GPT "
                         f"does not know: it comes from another architecture")
    # checkpoints of a torch.compile'd model (nanoGPT's) carry this prefix
    state_dict = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()}
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith('.attn.bias')}  # old causal-mask buffers
    check_shapes(model_args, {k: tuple(v.shape) for k, v in state_dict.items()}, source)
    model = GPT(GPTConfig(**model_args))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise SystemExit(f"error: the weights in {source} do not fit its model_args {model_args}: {e}") from e
    return model


def load_model(init_from: str, out_dir: str = 'out', device='cpu', dropout: float | None = None):
    """A model from 'resume' (out_dir/ckpt.pt), a GPT-2 name or a Hugging Face directory, and the checkpoint
    it came from; for pretrained weights, what get_tokenizer and check_tokens need of one (model_args, and vocab:
    the characters an exported character-level model carries in its meta.json)."""
    if init_from == 'resume':
        ckpt_path = os.path.join(out_dir, 'ckpt.pt')
        checkpoint = load_checkpoint(ckpt_path)
        if dropout is not None:
            checkpoint['model_args']['dropout'] = dropout
        model = model_from_checkpoint(checkpoint, ckpt_path)
    else:
        try:
            model = GPT.from_pretrained(init_from, None if dropout is None else dict(dropout=dropout))
        except (ValueError, RuntimeError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from e
        vocab = read_vocab(init_from) if os.path.isdir(init_from) else None
        checkpoint = {'model_args': asdict(model.config), 'vocab': vocab, 'source': init_from}
    return model.to(device), checkpoint


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
    if not same:
        raise SystemExit(f"error: {source} was trained on {describe_tokens(vocab, vocab_size)}, but {data.dir} holds "
                         f"{describe_tokens(data.vocab, 50257 if data.vocab is None else len(data.vocab))} (prepared "
                         f"again, or another dataset): its ids would mean other tokens; use the dataset the model "
                         f"was trained on, or start a new run")


def get_tokenizer(checkpoint: dict | None):
    """encode(str) -> list[int] and decode(list[int]) -> str: the character vocabulary the checkpoint carries (or,
    for older checkpoints, its dataset's), else GPT-2's BPE."""
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
                         f"back in data/{dataset}")
    if chars is not None:
        print0(f"Loading meta from {source}...")
        stoi = {c: i for i, c in enumerate(chars)}

        def encode(s: str) -> list[int]:
            unknown = sorted(set(s) - set(stoi))
            if unknown:
                raise SystemExit(f"error: the text has characters outside the model's vocabulary of {len(stoi)} "
                                 f"characters from {source}: {''.join(unknown)!r}")
            return [stoi[c] for c in s]

        def decode(ids: list[int]) -> str:
            return ''.join(chars[i] for i in ids)
        return encode, decode

    enc = gpt2_encoding()
    # a model trained with the padded vocabulary (50304) may, rarely, emit an id the tokenizer does not have
    return (lambda s: enc.encode(s, allowed_special={'<|endoftext|>'})), \
        (lambda ids: enc.decode([i for i in ids if i < enc.n_vocab]))
