"""
Checkpoints: what out_dir/ckpt.pt holds, written (Checkpointer.save), read back into a model (load_checkpoint,
model_from_checkpoint, load_model, which also takes OpenAI's GPT-2 names and Hugging Face folders), the training
state restored from it (Checkpointer.restore).

A checkpoint is one torch.save'd dict under nanoGPT's keys, whatever wrote it (one process, DDP or FSDP):
    model          the uncompiled, unwrapped model's state_dict (whole tensors)
    optimizer      AdamW's state_dict (whole tensors)
    muon           with optimizer='muon': Muon's state_dict (AdamW's then covers the embeddings and LayerNorms)
    model_args     GPTConfig's arguments
    iter_num       the iterations done
    best_val_loss  the lowest val loss seen (only ever lowered)
    config         the run's resolved config
and, for an exact resume: scaler (the float16 GradScaler), loader (the position in the batch stream), rng (every
rank's RNG states), world_size; and vocab, the characters of a character-level model, so sampling needs no dataset.
"""

import math
import os
import re
import uuid
from dataclasses import asdict

import torch

from model import GPT, GPTConfig
from nanogpt import fields
from nanogpt.errors import takes
from nanogpt.files import atomic_path
from nanogpt.optim import OPTIMIZERS, parts
from nanogpt.parallel import full_state_dict, load_optimizer_state, restore_rng, rng_states
from nanogpt.runlog import read_records
from nanogpt.runtime import print0
from nanogpt.tokenfiles import read_vocab
from nanogpt.weights import check_shapes, check_tensors, torch_load


def save_checkpoint(path: str, checkpoint: dict):
    """torch.save to a temporary file, renamed into place: a crash mid-save never leaves a broken checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


class Checkpointer:
    """Saves and restores the training state of one run: the live model, optimizer, scaler and loader, and what
    stays fixed for the run (model_args, config, vocab)."""

    def __init__(self, out_dir: str, runtime, raw_model, optimizer, scaler, loader, model_args: dict, config: dict,
                 vocab: list[str] | None, data, run: str):
        self.path = os.path.join(out_dir, 'ckpt.pt')
        self.runtime, self.raw_model, self.optimizer = runtime, raw_model, optimizer
        self.scaler, self.loader = scaler, loader
        # what a resume compares (check_resume): the dataset it trains on, and the run it belongs to
        dataset = {'dir': os.path.abspath(data.dir), 'files': (data.meta or {}).get('files')}
        # this process's part of the run (a resume starts another): the log's start records name theirs, and each
        # checkpoint the parts that led to it, so a resume can tell its own history from a copy's (check_resume)
        self.segment = uuid.uuid4().hex[:16]
        self.fixed = {'model_args': model_args, 'config': config, 'vocab': vocab, 'data': dataset, 'run': run,
                      'segments': [self.segment]}
        self.saved_iter = None  # the iteration of the checkpoint in out_dir, once there is one

    def save(self, iter_num: int, best_val_loss: float, val_loss: float) -> bool:
        """Write the checkpoint, unless the model has diverged (val_loss, its last evaluation's, or a weight is not
        finite): the checkpoint already there stays, and a line says so. A collective: every rank calls it (RNG
        states are gathered, and under FSDP the shards too, into whole tensors on rank 0's CPU, as DDP would save
        them); rank 0 writes. Returns whether a checkpoint was written."""
        if self.saved_iter == iter_num:
            return True  # out_dir holds this iteration's checkpoint already (the one a resume started from)
        master = self.runtime.master_process
        diverged = None if math.isfinite(val_loss) else 'the val loss is not finite'  # the same on every rank
        if diverged is None:
            rng = rng_states(self.runtime)
            model_state = full_state_dict(self.raw_model.state_dict(keep_vars=True), master)
            optimizer_states = {k: full_state_dict(o.state_dict(), master) for k, o in parts(self.optimizer).items()}
            bad = [k for k, t in model_state.items()
                   if master and t.is_floating_point() and not torch.isfinite(t).all()]
            diverged = f"weight {bad[0]} is not finite" if bad else None
        if diverged:
            if master:
                kept = f"{self.path} stays from iter {self.saved_iter}" if self.saved_iter is not None else 'none kept'
                print(f"step {iter_num}: {diverged}: no checkpoint saved ({kept})")
            return False
        if master:
            print(f"saving checkpoint to {os.path.dirname(self.path)}")
            save_checkpoint(self.path, {
                'model': model_state, **optimizer_states, 'scaler': self.scaler.state_dict(),
                'iter_num': iter_num, 'best_val_loss': best_val_loss, 'loader': self.loader.state_dict(),
                'rng': rng, 'world_size': self.runtime.world_size, **self.fixed})
        self.saved_iter = iter_num
        return True

    def restore(self, checkpoint: dict):
        """The optimizer (resharded under FSDP), scaler, batch stream position and this rank's RNG states of a
        checkpoint: the run continues as if it had never stopped. The weights are loaded with the model."""
        saved = checkpoint.get('config', {}).get('optimizer', 'adamw')
        ours = self.fixed['config'].get('optimizer', 'adamw')
        if saved != ours:  # one optimizer's state cannot continue another's
            raise SystemExit(f"error: {self.path} was trained with optimizer={saved!r}, this run asks for {ours!r}: "
                             f"resume with --optimizer={saved}, or start a new run in another out_dir")
        part = 'optimizer'
        try:  # what fields cannot say of these states (their insides are torch's), their loading does
            changed = []
            for part, optimizer in parts(self.optimizer).items():
                changed += load_optimizer_state(optimizer, checkpoint[part])
            part = 'scaler'
            if checkpoint.get('scaler'):  # a run without float16 saved a disabled scaler's empty state
                self.scaler.load_state_dict(checkpoint['scaler'])
                scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
                if not (math.isfinite(scale) and scale > 0):  # every step would be skipped as an overflow
                    raise ValueError(f"its scale is {scale}, not a finite number above 0")
            part = 'loader'
            if 'loader' in checkpoint:  # continue the batch stream instead of replaying it
                self.loader.load_state_dict(checkpoint['loader'])
            else:
                print0(f"note: {self.path} holds no position in the batch stream (an older checkpoint): the batches "
                       f"start again from the first")
            part = 'rng'
            restore_rng(checkpoint.get('rng', {}), self.runtime)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            raise SystemExit(f"error: {self.path}: its {part!r} state does not load ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}): the file is damaged; resume from a copy, "
                             f"or start a new run in another out_dir") from None
        self.saved_iter = checkpoint['iter_num']
        self.fixed['segments'] = list(checkpoint.get('segments') or []) + [self.segment]
        if changed:
            print0(f"note: resuming with this run's {', '.join(dict.fromkeys(changed))}")

    def last_note(self, iter_num: int, val_loss: float, best_val_loss: float) -> str:
        """Where a run that ends at iter_num left its last checkpoint, and why it is not of iter_num when it is not."""
        if self.saved_iter == iter_num:
            return f"the last checkpoint is {self.path}, at iter {iter_num}"
        why = "no step was trained" if iter_num == 0 else "its val loss is not finite" if not math.isfinite(val_loss) \
            else f"its val loss {val_loss:.4f} did not improve on {best_val_loss:.4f} and always_save_checkpoint=False"
        where = "this run saved none" if self.saved_iter is None else f"{self.path} is from iter {self.saved_iter}"
        return f"note: no checkpoint of iter {iter_num} ({why}): {where}"


def check_resume(checkpoint: dict, ckpt_path: str, data, note) -> str:
    """What a resume checks beyond the model's tokens (check_tokens): that the log in its folder is its run's (a
    checkpoint copied in from another run would mix two runs' records in it), and whether the dataset is the one it
    trained on (another folder, or one prepared again: a note, and the run goes on). Returns the run's id, which each
    of its checkpoints and each start record of its log carry (a new one for a checkpoint without)."""
    run, log = checkpoint.get('run'), os.path.join(os.path.dirname(ckpt_path), 'log.jsonl')
    if run is not None and os.path.exists(log):
        starts = [r for r in read_records(log, note=lambda _: None) if 'params' in r]
        runs = {r.get('run') for r in starts} - {None}
        # the parts of the run whose records the resume keeps (begun before the checkpoint's iter) must be the ones
        # that led to the checkpoint: a folder copied and resumed apart has the same run id, not the same parts
        chain = checkpoint.get('segments')
        forked = chain is not None and any(r.get('segment', chain[0]) not in chain for r in starts
                                           if r['iter'] < checkpoint['iter_num'])
        if runs - {run} or forked:  # another run's records in it (logs put together), or only another run's
            raise SystemExit(f"error: {ckpt_path} is not a checkpoint of the run {log} records (one of them copied in "
                             f"from another run's folder?): resume it in its own folder, or move {log} away")
    saved, files = checkpoint.get('data') or {}, (data.meta or {}).get('files')
    if isinstance(saved.get('dir'), str) and os.path.realpath(saved['dir']) != os.path.realpath(data.dir):
        former = f"--dataset={saved['dir']} goes on with the former" if os.path.isdir(saved['dir']) else \
            "that folder is no longer there"
        note(f"note: {ckpt_path} trained on {saved['dir']}; this run reads {data.dir} ({former})")
    elif saved.get('files') is not None and saved['files'] != files:
        note(f"note: {data.dir} was prepared again since {ckpt_path} was saved (its files differ): the run goes on "
             f"with the new files from the same position")
    return run if isinstance(run, str) else uuid.uuid4().hex[:16]


# the fields of ckpt.pt the code uses, and what each must be (nanoGPT's checkpoints included)
SCALAR = ('a finite number, 0 or more', lambda v: (fields.NUMBER[1](v) or (
    type(v).__name__ == 'Tensor' and v.numel() == 1)) and 0 <= float(v) < math.inf)
CHECKPOINT = dict(model=fields.TENSORS, model_args=fields.DICT, iter_num=fields.COUNT, best_val_loss=SCALAR,
                  config=fields.DICT, optimizer=fields.DICT, muon=fields.DICT, scaler=fields.DICT, loader=fields.DICT,
                  rng=fields.DICT, world_size=fields.POSITIVE_INT, vocab=fields.CHARS, data=fields.DICT,
                  run=fields.STR, segments=('a list of ids', lambda v: isinstance(v, list) and v and all(
                      isinstance(x, str) for x in v)))
MODEL_ARGS = dict(n_layer=fields.POSITIVE_INT, n_head=fields.POSITIVE_INT, n_embd=fields.POSITIVE_INT,
                  block_size=fields.POSITIVE_INT, vocab_size=fields.POSITIVE_INT, bias=fields.BOOL,
                  dropout=fields.FRACTION)
CONFIG = dict(dataset=fields.STR, batch_size=fields.POSITIVE_INT, gradient_accumulation_steps=fields.POSITIVE_INT,
              optimizer=(' or '.join(map(repr, OPTIMIZERS)), lambda v: v in OPTIMIZERS))
LOADER = dict(next=fields.COUNT, seed=('an integer', lambda v: type(v) is int))
TRAINING = ('iter_num', 'best_val_loss', 'optimizer')  # what a resume needs beyond the model


def load_checkpoint(ckpt_path: str, required=('model', 'model_args')) -> dict:
    """The checkpoint at ckpt_path, every field the code uses checked (the required ones present); SystemExit naming
    what to do where there is none (OpenAI's weights too, for a script that takes --init_from)."""
    if not os.path.exists(ckpt_path):
        exported = takes('init_from') and os.path.exists(os.path.join(os.path.dirname(ckpt_path), 'config.json'))
        raise SystemExit(f"error: no checkpoint at {ckpt_path}: train one with train.py (out_dir sets where)"
                         f"{', or pass --init_from=gpt2 for OpenAI weights' if takes('init_from') else ''}"
                         f"{f' (the folder holds an export: --init_from={os.path.dirname(ckpt_path)})' * exported}")
    checkpoint = torch_load(ckpt_path, 'checkpoint')
    fix = "the file is damaged or not a checkpoint of this project or nanoGPT: use another, or train again"
    fields.check(checkpoint, CHECKPOINT, ckpt_path, fix, required)
    fields.check(checkpoint['model_args'], MODEL_ARGS, f"{ckpt_path} model_args", fix,
                 ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size'))
    fields.check(checkpoint.get('config', {}), CONFIG, f"{ckpt_path} config", fix)
    if 'loader' in checkpoint:
        fields.check(checkpoint['loader'], LOADER, f"{ckpt_path} loader", fix, tuple(LOADER))
    if 'best_val_loss' in checkpoint:  # a number from here on, whatever the tensor it was saved as (nanoGPT's)
        checkpoint['best_val_loss'] = float(checkpoint['best_val_loss'])
    args, vocab = checkpoint['model_args'], checkpoint.get('vocab')
    if args['n_embd'] % args['n_head']:
        raise SystemExit(f"error: {ckpt_path} model_args: n_embd={args['n_embd']} is not divisible by n_head="
                         f"{args['n_head']}: {fix}")
    if vocab is not None and len(vocab) != args['vocab_size']:
        raise SystemExit(f"error: {ckpt_path} holds {len(vocab)} characters for a vocab_size of {args['vocab_size']}:"
                         f" {fix}")
    if checkpoint.get('config', {}).get('optimizer') == 'muon' and 'optimizer' in required:
        fields.check(checkpoint, {'muon': fields.DICT}, ckpt_path, fix, ('muon',))
    return checkpoint


def model_from_checkpoint(checkpoint: dict, source: str = 'checkpoint') -> GPT:
    """The GPT described by a checkpoint's model_args, with its weights (nanoGPT's checkpoints included)."""
    model_args = checkpoint['model_args']
    known = set(GPTConfig.__dataclass_fields__)
    if set(model_args) - known:
        raise SystemExit(f"error: {source} has model arguments {sorted(set(model_args) - known)} that this GPT "
                         f"does not know: it comes from another architecture")
    # checkpoints of a torch.compile'd model (nanoGPT's) or of a DDP wrapper carry these prefixes, in either order
    state_dict = {re.sub(r'^((_orig_mod|module)\.)+', '', k): v for k, v in checkpoint['model'].items()}
    check_tensors(state_dict, source)
    head, wte = state_dict.get('lm_head.weight'), state_dict.get('transformer.wte.weight')
    if head is not None and wte is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
        # loaded after wte, it would replace the tied weight
        raise SystemExit(f"error: {source}: lm_head.weight differs from transformer.wte.weight, which GPT-2 ties: "
                         f"the file is damaged or another model's")
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith('.attn.bias')}  # old causal-mask buffers
    check_shapes(model_args, {k: tuple(v.shape) for k, v in state_dict.items()}, source)
    model = GPT(GPTConfig(**model_args))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        ours = model.state_dict()
        missing, unexpected = sorted(set(ours) - set(state_dict)), sorted(set(state_dict) - set(ours))
        shapes = [f"{k} is {tuple(v.shape)}, not {tuple(ours[k].shape)}" for k, v in state_dict.items()
                  if k in ours and v.shape != ours[k].shape]
        bias = " (model_args has no 'bias': GPTConfig's default, True, expects them)" if 'bias' not in model_args \
            and missing and all(k.endswith('.bias') for k in missing) else ''
        what = '; '.join(filter(None, [missing and f"it lacks {', '.join(missing[:3])}{' ...' * (len(missing) > 3)}",
                                       unexpected and f"{', '.join(unexpected[:3])} are not this GPT's", *shapes[:2]]))
        raise SystemExit(f"error: the weights in {source} do not fit its model_args: {what or str(e).splitlines()[0]}"
                         f"{bias}; the file is damaged or another model's") from e
    return model


def note_shape(model, model_args: dict, keys, source: str):
    """Say which of the config's shape keys the loaded model overrides (its shape wins, as in nanoGPT)."""
    differ = [f"{k}={getattr(model.config, k)} (config: {model_args[k]})" for k in keys
              if getattr(model.config, k) != model_args[k]]
    if differ:
        print0(f"note: {source} model shape: {', '.join(differ)}")


def load_model(init_from: str, out_dir: str = 'out', device='cpu', dropout: float | None = None,
               train: bool = False):
    """A model from 'resume' (out_dir/ckpt.pt), a GPT-2 name or a Hugging Face directory, and the checkpoint
    it came from; for pretrained weights, what get_tokenizer and check_tokens need of one (model_args, and vocab:
    the characters an exported character-level model carries in its meta.json). train: a checkpoint to resume, whose
    training state must be there too."""
    if init_from == 'resume':
        ckpt_path = os.path.join(out_dir, 'ckpt.pt')
        checkpoint = load_checkpoint(ckpt_path, ('model', 'model_args') + TRAINING * train)
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
    bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad:  # sampled, it would print blank text; trained on, NaN from the first step
        raise SystemExit(f"error: {ckpt_path if init_from == 'resume' else init_from}: weight {bad} holds NaN or "
                         f"inf values (a model that diverged, or a damaged file): use another checkpoint")
    if checkpoint.get('vocab') is not None and len(checkpoint['vocab']) != model.config.vocab_size:
        raise SystemExit(f"error: {init_from}: its {len(checkpoint['vocab'])} characters (meta.json) are not its "
                         f"vocabulary of {model.config.vocab_size} tokens: export the model again")
    return model.to(device), checkpoint
