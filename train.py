"""
This training script can be run both on a single gpu in debug mode,
and also in a larger training run with distributed data parallel (ddp).

To run on a single GPU, example:
$ python train.py --batch_size=32 --compile=False

To run with DDP on 4 gpus on 1 node, example:
$ torchrun --standalone --nproc_per_node=4 train.py

To shard the weights, gradients and AdamW state over the GPUs instead of copying them (FSDP2), for models
too large for one GPU's memory with DDP:
$ torchrun --standalone --nproc_per_node=8 train.py --data_parallel=fsdp

To run with DDP on 16 gpus across 2 nodes of 8, example:
- Run on the first (master) node, whose address the other node reaches (example IP 10.0.0.1):
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=1234 train.py
- Run on the worker node:
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=1234 train.py
(If your cluster does not have Infiniband interconnect prepend NCCL_IB_DISABLE=1)

Config files (config/*.py) and --key=value override the keys below; --help lists them with their defaults.
"""

import math
import os
import signal
import sys
import time
import uuid
from dataclasses import asdict

import torch

from configurator import config_defaults, configure
from model import GPT, GPTConfig
from nanogpt import rundir
from nanogpt.checkpoint import Checkpointer, check_resume, load_model, note_shape
from nanogpt.errors import one_line_errors
from nanogpt.fit import check_model_size, fit_step, fitted_sizes, resumed_sizes
from nanogpt.loader import TokenLoader
from nanogpt.parallel import DATA_PARALLEL, clip_grad_norm, place_model, sync_gradients, wrap_model
from nanogpt.runlog import RunLog
from nanogpt.optim import OPTIMIZERS
from nanogpt.runtime import (RunGuard, check_needs, device_peak_flops, distributed_env, end_distributed, print0,
                             setup_runtime)
from nanogpt.tokenfiles import Dataset, dataset_dir
from nanogpt.tokenizer import check_tokens
from nanogpt.weights import PRETRAINED

# -----------------------------------------------------------------------------
# default config values designed to train a gpt2 (124M) on OpenWebText
# I/O
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False  # if True, script exits right after the first eval
always_save_checkpoint = True  # if True, always save a checkpoint after each eval
checkpoint_interval = 0  # also save every this many iterations (0: only at evals): what a restart can lose
init_from = 'scratch'  # 'scratch' or 'resume' or 'gpt2*' (or a Hugging Face GPT-2 directory)
# wandb logging
wandb_log = False  # disabled by default
wandb_project = 'owt'
wandb_run_name = 'gpt2'  # 'run' + str(time.time())
# data
dataset = 'openwebtext'  # data/<dataset>, or a path to a directory of token files
gradient_accumulation_steps = 5 * 8  # used to simulate larger batch sizes
batch_size = 12  # if gradient_accumulation_steps > 1, this is the micro-batch size
block_size = 1024
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0  # for pretraining 0 is good, for finetuning try 0.1+
bias = False  # do we use bias inside LayerNorm and Linear layers?
# adamw optimizer
optimizer = 'adamw'  # or 'muon': torch.optim.Muon for the Blocks' matrices, AdamW for the rest (torch >= 2.9)
learning_rate = 6e-4  # max learning rate
muon_learning_rate = 0.02  # optimizer='muon': Muon's max learning rate, on learning_rate's schedule
muon_momentum = 0.95  # optimizer='muon': Muon's momentum (Nesterov)
max_iters = 600000  # total number of training iterations
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip gradients at this value, or disable if == 0.0
max_bad_steps = 10  # stop after this many steps in a row with a non-finite loss or gradient (each is skipped)
# learning rate decay settings
decay_lr = True  # whether to decay the learning rate
warmup_iters = 2000  # how many steps to warm up for
lr_decay_iters = 600000  # should be ~= max_iters per Chinchilla
min_lr = 6e-5  # minimum learning rate, should be ~= learning_rate/10 per Chinchilla
# system
data_parallel = 'ddp'  # under torchrun: 'ddp' (a full copy of the model per GPU) or 'fsdp' (sharded, see README)
backend = 'auto'  # DDP backend: 'auto' (nccl on cuda, gloo elsewhere), 'nccl', 'gloo', etc.
device = 'auto'  # 'auto' (cuda, else mps, else cpu), or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where supported on cuda, else float16; float32 elsewhere), 'float32', ...
compile = True  # use PyTorch 2.0 to compile the model to be faster (uncompiled, with a note, where it cannot)
fit_batch_size = True  # a batch_size that does not fit in memory trains as smaller micro-batches, accumulated
chunked_loss = False  # lm_head + cross-entropy in chunks, never materialising the logits (torch >= 2.13)
seed = 1337
peak_flops = None  # the device's peak FLOPS for MFU; None looks the GPU up in nanogpt.runtime.PEAK_BF16_FLOPS
# evaluation
hellaswag_interval = 0  # HellaSwag acc_norm every this many iterations (0: never), see hellaswag.py
hellaswag_limit = 0  # examples per HellaSwag evaluation (0: all 10,042)
hellaswag_file = ''  # a local hellaswag_val.jsonl; empty: downloaded once into data/hellaswag
# -----------------------------------------------------------------------------
# the values each key may take: anything else stops before any work with one line naming the key
RANGES = dict(eval_interval='> 0', log_interval='> 0', eval_iters='> 0', checkpoint_interval='>= 0',
              max_bad_steps='> 0', gradient_accumulation_steps='> 0', batch_size='> 0', block_size='> 0',
              n_layer='> 0', n_head='> 0', n_embd='> 0', dropout='[0, 1)', optimizer=OPTIMIZERS, learning_rate='>= 0',
              muon_learning_rate='>= 0', muon_momentum='[0, 1)', max_iters='>= 0', weight_decay='>= 0',
              beta1='[0, 1)', beta2='[0, 1)', grad_clip='>= 0', warmup_iters='>= 0', lr_decay_iters='>= 0',
              min_lr='>= 0', data_parallel=DATA_PARALLEL, hellaswag_interval='>= 0', hellaswag_limit='>= 0',
              peak_flops='> 0 or None', backend=('auto', 'nccl', 'gloo', 'mpi', 'ucc', 'xccl'))
defaults = config_defaults(globals())  # the names above: what config files and --key=value may set


def get_lr(it: int, learning_rate: float, warmup_iters: int, lr_decay_iters: int, min_lr: float) -> float:
    """learning rate decay scheduler (cosine with warmup)"""
    # 1) linear warmup for warmup_iters steps, already above zero at it = 0
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    # 2) if it > lr_decay_iters, return min learning rate
    if it > lr_decay_iters:
        return min_lr
    # 3) in between, use cosine decay down to min learning rate
    decay_ratio = (it - warmup_iters) / max(lr_decay_iters - warmup_iters, 1)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


def train_step(model, optimizer, scaler, loader, grad_accum: int, ctx, grad_clip: float, lr: float):
    """One optimisation step: grad_accum micro-batches, gradients synchronised over DDP or FSDP ranks on the last one
    only, clipping, and the (possibly scaled) optimizer step, skipped when the gradients are not finite. Returns the
    mean micro-batch loss and the gradient norm, as tensors."""
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr * param_group.get('lr_scale', 1.0)  # Muon's groups peak at muon_learning_rate
    total = 0.0
    for micro_step in range(grad_accum):
        X, Y = loader.next_batch()
        # in DDP (and FSDP) training we only need to sync gradients at the last micro step
        sync_gradients(model, micro_step == grad_accum - 1)
        with ctx:
            _, loss = model(X, Y)
            loss = loss / grad_accum  # scale the loss to account for gradient accumulation
        total = total + loss.detach()
        # backward pass, with gradient scaling if training in fp16
        scaler.scale(loss).backward()
    # clip the gradient, after unscaling it in float16 (the norm is measured even without clipping)
    scaler.unscale_(optimizer)
    norm = clip_grad_norm(model, grad_clip)
    # step the optimizer; a non-finite gradient would write NaN into every weight, so that step is skipped
    # (in float16 the scaler skips it by itself, and lowers its scale)
    if scaler.is_enabled() or torch.isfinite(norm):
        scaler.step(optimizer)
    scaler.update()
    # flush the gradients as soon as we can, no need for this memory anymore
    optimizer.zero_grad(set_to_none=True)
    return total, norm


@torch.no_grad()
def estimate_loss(model, loaders: dict, eval_iters: int, ctx, world_size: int = 1, micro_batch: int = 0) -> dict:
    """Mean loss over eval_iters batches of each split, the batches spread over the DDP ranks and averaged. Each
    loader restarts from its first batch, so that every evaluation reads the same batches; a batch is forwarded in
    equal parts of micro_batch rows where it does not fit in memory whole (an eval_only run's)."""
    out = {}
    model.eval()
    for split, loader in loaders.items():
        loader.reset()
        n = max(1, math.ceil(eval_iters / world_size))
        losses = torch.zeros(n)
        for k in range(n):
            X, Y = loader.next_batch()
            rows = micro_batch or len(X)
            with ctx:
                parts = [model(X[i:i + rows], Y[i:i + rows])[1] for i in range(0, len(X), rows)]
            losses[k] = torch.stack(parts).mean().item()
        mean = losses.mean().to(X.device)
        if world_size > 1:
            torch.distributed.all_reduce(mean)
            mean /= world_size
        out[split] = mean.item()
    model.train()
    return out



# -----------------------------------------------------------------------------
if __name__ == '__main__':
    one_line_errors(defaults)  # an error not foreseen still ends in one line (NANOGPT_DEBUG=1: traceback)
    # the checked configurator: config files and --key=value override the globals above
    globals().update(vars(configure(defaults, sys.argv[1:], RANGES)))
    config = {k: globals()[k] for k in defaults}  # useful for logging, and saved in checkpoints
    check_needs(config)  # what the config needs of this installation (chunked_loss, Muon, wandb), before any work

    # various inits, derived attributes, I/O setup
    world_size = distributed_env()[3]  # checked before any process waits for the others
    if gradient_accumulation_steps % world_size:
        raise SystemExit(f"error: gradient_accumulation_steps={gradient_accumulation_steps} is not divisible by "
                         f"the {world_size} processes: make it a multiple of {world_size}")
    runtime = setup_runtime(device, dtype, seed, backend)  # device, DDP process group, autocast, seeds
    ddp, ddp_rank, ddp_world_size = runtime.ddp, runtime.rank, runtime.world_size
    master_process = runtime.master_process  # this process will do logging, checkpointing etc.
    device, device_type, dtype = runtime.device, runtime.device_type, runtime.dtype
    # world_size number of processes will be training simultaneously, so we can scale
    # down the desired gradient accumulation iterations per process proportionally
    gradient_accumulation_steps //= ddp_world_size
    print0(f"config: {config}")
    # the data first, and every cheap check before any download or model: the dataset's files (one reader applies
    # every check) and the HellaSwag examples
    data = Dataset(dataset_dir(dataset), note=print0)
    vocab = data.vocab  # a character vocabulary, which checkpoints also carry
    if vocab is not None:
        print0(f"found vocab_size = {len(vocab)} (inside {data.dir})")
    hellaswag = None
    if hellaswag_interval > 0:
        if vocab is not None:  # said now, not at the first evaluation (nor after a download)
            raise SystemExit(f"error: hellaswag_interval={hellaswag_interval} needs a GPT-2 BPE model, and {data.dir} "
                             f"is character-level data: set --hellaswag_interval=0")
        from hellaswag import evaluate_hellaswag, load_examples
        hellaswag = load_examples(hellaswag_file, hellaswag_limit or None)

    # the run folder: this run's to write (a new run never overwrites another's files)
    init_from = rundir.claim(out_dir, init_from, eval_only, master_process)
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')

    # model init
    shape_keys = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias')
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                      vocab_size=None, dropout=dropout)  # start with model_args from command line
    checkpoint = None
    run = uuid.uuid4().hex[:16]  # this run's id, in its checkpoints and its log's start records: a resume keeps it
    iter_num = 0
    best_val_loss = 1e9
    if init_from == 'scratch':
        print0("Initializing a new model from scratch")
        # GPT-2's 50257 rounded up to 50304 for efficiency, unless the dataset has its own vocabulary
        model_args['vocab_size'] = len(vocab) if vocab is not None else 50304
        check_model_size(**model_args)
        model = GPT(GPTConfig(**model_args), seed=seed)
    elif init_from == 'resume':
        print0(f"Resuming training from {out_dir}")
        model, checkpoint = load_model('resume', out_dir, 'cpu', dropout=dropout, train=True)
        note_shape(model, model_args, shape_keys, "resuming with the checkpoint's")  # it wins, as in nanoGPT
        check_tokens(checkpoint, ckpt_path, data)  # the dataset's ids mean what they meant when it was saved
        run = check_resume(checkpoint, ckpt_path, data, print0)  # its own log, and the dataset it trained on
        iter_num = checkpoint['iter_num']
        best_val_loss = checkpoint['best_val_loss']
        # a micro-batch fitted to memory when the run started stays: the batch stream continues as it was drawn
        batch_size, gradient_accumulation_steps = resumed_sizes(checkpoint.get('config', {}), batch_size,
                                                                gradient_accumulation_steps, ddp_world_size)
    else:
        # OpenAI's GPT-2 (gpt2, gpt2-medium, ...) or a Hugging Face GPT-2 folder
        source = 'OpenAI GPT-2 weights' if init_from in PRETRAINED else 'a GPT-2 folder'
        print0(f"Initializing from {source}: {init_from}")
        model, pretrained = load_model(init_from, dropout=dropout)
        check_tokens(pretrained, init_from, data)
        if block_size > model.config.block_size:
            raise SystemExit(f"error: block_size={block_size} is above the pretrained model's "
                             f"{model.config.block_size}: use --block_size={model.config.block_size} or less")
        note_shape(model, model_args, ('n_layer', 'n_head', 'n_embd', 'bias'), f"initializing with {init_from}'s")
        # crop down the model block size if desired, using model surgery
        if block_size < model.config.block_size:
            model.crop_block_size(block_size)
    # the model's shape from here on, whatever the config said
    model_args = asdict(model.config)
    n_layer, n_head, n_embd, block_size, bias = (model_args[k] for k in shape_keys)
    config.update({k: model_args[k] for k in shape_keys})
    tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
    print0(f"tokens per iteration will be: {tokens_per_iter:,} on {ddp_world_size} process(es), device {device}, "
           f"dtype {dtype}")  # once the model's block_size is known (a resume's is the checkpoint's)
    print0(f"number of parameters: {model.get_num_params() / 1e6:.2f}M")
    model.chunked_loss = chunked_loss

    # data: each rank reads its own batches of one numbered stream, whose position the checkpoint saves
    train_loader = TokenLoader(data, 'train', batch_size, block_size, model_args['vocab_size'], device,
                               seed, ddp_rank, ddp_world_size)
    # the eval loaders restart at every evaluation, so every evaluation reads the same batches
    eval_loaders = {split: TokenLoader(data, split, batch_size, block_size, model_args['vocab_size'], device,
                                       seed + 1, ddp_rank, ddp_world_size) for split in ('train', 'val')}

    # from here on the run writes in out_dir: it holds the folder (run.lock) until it ends
    if master_process and not eval_only:
        rundir.hold(out_dir, init_from)

    # initialize a GradScaler. If enabled=False scaler is a no-op. Under FSDP too: unscaling sharded (DTensor)
    # gradients all-reduces the overflow flag, so every rank skips a step when any rank's shard overflowed
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))

    # the model on its device (sharded under FSDP), then the optimizer over what this rank holds
    ctx = place_model(model, runtime, data_parallel)
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, optimizer,
                                           muon_learning_rate, muon_momentum)
    checkpointer = Checkpointer(out_dir, runtime, model, optimizer, scaler, train_loader, model_args, config, vocab,
                                data, run)
    if checkpoint is not None:
        checkpointer.restore(checkpoint)  # optimizer, scaler, data position, RNG: continue exactly
    checkpoint = None  # free up memory

    # compile the model and wrap it into DDP (checkpoints save raw_model, without the _orig_mod. prefix), fitting the
    # run to this machine before its first step (nanogpt/fit.py): a micro-batch that does not fit in memory becomes
    # smaller ones, accumulated (the same tokens per iteration, the same math); compile falls back where it fails
    raw_model = model
    model, micro_batch, _ = fit_step(lambda compile: wrap_model(raw_model, runtime, data_parallel, compile), runtime,
                                     batch_size, block_size, ctx, optimizer, fit_batch_size, compile,
                                     ddp and data_parallel == 'fsdp', train=not eval_only)
    batch_size, gradient_accumulation_steps = fitted_sizes(micro_batch, batch_size, block_size,
                                                           gradient_accumulation_steps, ddp_world_size, device,
                                                           train=not eval_only)
    config.update(batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps * ddp_world_size)
    # evaluations read the batches of the fitted run too; a resumed run keeps its own (forwarded in parts), so that
    # its val losses compare with its checkpoint's
    for loader in (train_loader, *(eval_loaders.values() if init_from != 'resume' else ())):
        loader.batch_size = batch_size

    # logging: out_dir/log.jsonl always (plot.py draws it), wandb when asked
    runlog = RunLog(out_dir, master_process, iter_num, wandb_log, wandb_project, wandb_run_name, config,
                    write=not eval_only)
    runlog.log(iter=iter_num, params=raw_model.get_num_params(), n_layer=n_layer, n_head=n_head, n_embd=n_embd,
               block_size=block_size, dataset=dataset, tokens_per_iter=tokens_per_iter, init_from=init_from,
               time=time.time(), run_id=rundir.RUN_ID, run=run, segment=checkpointer.segment)
    peak_flops = peak_flops or device_peak_flops(device)  # for MFU; None: unknown, MFU is not printed
    # preemption (SIGTERM, Ctrl-C) and non-finite steps, acted on by every rank together after each step
    guard = RunGuard(runtime, max_bad_steps, out_dir, runlog.log)

    if iter_num >= max_iters and not eval_only and init_from == 'resume':  # a finished run resumed: no step
        print0(f"note: the checkpoint is at iter {iter_num}, max_iters={max_iters}: nothing to train; raise max_iters "
               f"to train on")
    # training loop
    t0 = time.time()
    local_iter_num = 0  # number of iterations in the lifetime of this process
    t0_iter = iter_num  # the iteration at which t0 was taken
    running_mfu = -1.0
    running_dt = None  # recent time per iteration, for the ETA: it follows a machine that slows down or speeds up
    losses = {'val': best_val_loss}  # the last evaluation's, which a save checks: until then, the (sound) start's
    while True:
        # determine and set the learning rate for this iteration
        lr = get_lr(iter_num, learning_rate, warmup_iters, lr_decay_iters, min_lr) if decay_lr else learning_rate
        last = iter_num >= max_iters or eval_only

        # once in a while: evaluate the loss on train/val sets and write checkpoints, and at the very end
        saved = False
        if iter_num % eval_interval == 0 or last:
            losses = estimate_loss(model, eval_loaders, eval_iters, ctx, ddp_world_size, micro_batch)
            print0(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            runlog.log(iter=iter_num, train_loss=losses['train'], val_loss=losses['val'], lr=lr)
            # unlike nanoGPT, best_val_loss is never overwritten by a worse loss
            improved = losses['val'] < best_val_loss
            best_val_loss = min(best_val_loss, losses['val'])
            if (improved or always_save_checkpoint) and iter_num > 0 and not eval_only:
                saved = checkpointer.save(iter_num, best_val_loss, losses['val'])  # never a diverged model
            t0, t0_iter = time.time(), iter_num  # evaluation time is not training time

        # once in a while: a checkpoint between evaluations, so that a restart loses at most checkpoint_interval
        if checkpoint_interval and iter_num % checkpoint_interval == 0 and iter_num > 0 and not (saved or eval_only):
            checkpointer.save(iter_num, best_val_loss, losses['val'])
            t0, t0_iter = time.time(), iter_num

        # once in a while: HellaSwag, every hellaswag_interval iterations and at the end
        if hellaswag is not None and (iter_num % hellaswag_interval == 0 or last):
            acc = evaluate_hellaswag(raw_model, hellaswag, runtime, progress=False)
            print0(f"step {iter_num}: hellaswag acc_norm {acc['acc_norm']:.4f}, acc {acc['acc']:.4f}")
            runlog.log(iter=iter_num, hellaswag=acc['acc_norm'], hellaswag_acc=acc['acc'])
            t0, t0_iter = time.time(), iter_num
        if last:
            break

        # the training step: forward backward update, with gradient accumulation to simulate larger batch size
        loss, grad_norm = train_step(model, optimizer, scaler, train_loader, gradient_accumulation_steps, ctx,
                                     grad_clip, lr)
        iter_num += 1
        local_iter_num += 1

        # everything below is bookkeeping. A step with a non-finite loss or gradient was skipped (in float16 the
        # scaler skips overflowing steps by itself: those are normal, only a non-finite loss counts)
        bad, stop = guard.check(iter_num, bool(torch.isfinite(loss if scaler.is_enabled() else grad_norm)))
        # a stop request: save where the run stands before printing anything (the terminal may be gone), and leave
        if stop:
            saved = checkpointer.save(iter_num, best_val_loss, losses['val'])
            print0(f"interrupted by {signal.Signals(stop).name} at iter {iter_num}: {'saved' if saved else 'kept'} "
                   f"{ckpt_path}; continue with --init_from=resume", file=sys.stderr, flush=True)
            break

        # timing and logging
        if iter_num % log_interval == 0 and master_process and not bad:
            lossf = loss.item()  # a CPU-GPU sync point, only every log_interval
            t1 = time.time()
            dt = (t1 - t0) / (iter_num - t0_iter)
            t0, t0_iter = t1, iter_num
            if local_iter_num >= 5 * log_interval and peak_flops:  # let the training loop settle a bit
                mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt, peak_flops)
                running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
            running_dt = dt if running_dt is None else 0.8 * running_dt + 0.2 * dt
            eta = (max_iters - iter_num) * running_dt
            mfu_text = f"{running_mfu * 100:.2f}%" if running_mfu >= 0 else "n/a"
            print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.3e}, time {dt * 1000:.2f}ms, "
                  f"{tokens_per_iter / dt:,.0f} tok/s, mfu {mfu_text}, eta {eta / 60:.1f}min", flush=True)
            runlog.log(iter=iter_num, loss=lossf, lr=lr, grad_norm=grad_norm.item(), ms=dt * 1000,
                       tok_per_s=tokens_per_iter / dt, mfu=running_mfu if running_mfu >= 0 else None)


    if checkpointer.saved_iter == iter_num or not eval_only:
        print0(checkpointer.last_note(iter_num, losses['val'], best_val_loss))  # which iteration ckpt.pt holds, and why
    runlog.finish()
    rundir.release()
    code = 130 if guard.signum == signal.SIGINT else 0  # 130: the shell's code for a run ended by Ctrl-C
    if ddp:
        end_distributed(code)  # after rank 0 has written the last checkpoint
    if code:
        sys.exit(code)
