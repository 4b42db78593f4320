"""
This training script can be run both on a single gpu in debug mode,
and also in a larger training run with distributed data parallel (ddp).

To run on a single GPU, example:
$ python train.py --batch_size=32 --compile=False

To run with DDP on 4 gpus on 1 node, example:
$ torchrun --standalone --nproc_per_node=4 train.py

To run with DDP on 4 gpus across 2 nodes, example:
- Run on the first (master) node with example IP 123.456.123.456:
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=123.456.123.456 --master_port=1234 train.py
- Run on the worker node:
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=1 --master_addr=123.456.123.456 --master_port=1234 train.py
(If your cluster does not have Infiniband interconnect prepend NCCL_IB_DISABLE=1)

The pieces (LR schedule, loss estimate, one optimisation step, checkpointing) live at module level so that
bench.py and the tests use the very same code; the run itself is main().
"""

import math
import os
import sys
import time
from dataclasses import asdict

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from common import atomic_path, dataset_dir, load_model, print0, setup_runtime
from configurator import config_defaults, configure
from data.tokenfiles import TokenLoader
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# default config values designed to train a gpt2 (124M) on OpenWebText
# I/O
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False  # if True, script exits right after the first eval
always_save_checkpoint = True  # if True, always save a checkpoint after each eval
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
learning_rate = 6e-4  # max learning rate
max_iters = 600000  # total number of training iterations
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip gradients at this value, or disable if == 0.0
# learning rate decay settings
decay_lr = True  # whether to decay the learning rate
warmup_iters = 2000  # how many steps to warm up for
lr_decay_iters = 600000  # should be ~= max_iters per Chinchilla
min_lr = 6e-5  # minimum learning rate, should be ~= learning_rate/10 per Chinchilla
# system
backend = 'auto'  # DDP backend: 'auto' (nccl on cuda, gloo elsewhere), 'nccl', 'gloo', etc.
device = 'auto'  # 'auto' (cuda, else mps, else cpu), or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where supported on cuda, else float16; float32 elsewhere), 'float32', ...
compile = True  # use PyTorch 2.0 to compile the model to be faster
seed = 1337
peak_flops = None  # the device's peak FLOPS for MFU; None looks the GPU up in model.PEAK_BF16_FLOPS
# evaluation
hellaswag_interval = 0  # HellaSwag acc_norm every this many iterations (0: never), see hellaswag.py
hellaswag_limit = 0  # examples per HellaSwag evaluation (0: all 10,042)
hellaswag_file = ''  # a local hellaswag_val.jsonl; empty: downloaded once into data/hellaswag
# -----------------------------------------------------------------------------
defaults = config_defaults(globals())


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
    """One optimisation step: grad_accum micro-batches, gradients synchronised over DDP ranks on the last one only,
    clipping, and the (possibly scaled) optimizer step. Returns the mean micro-batch loss as a tensor (no sync)."""
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr
    total = 0.0
    for micro_step in range(grad_accum):
        X, Y = loader.next_batch()
        if isinstance(model, DDP):
            # in DDP training we only need to sync gradients at the last micro step; the flag is read by forward
            model.require_backward_grad_sync = (micro_step == grad_accum - 1)
        with ctx:
            _, loss = model(X, Y)
            loss = loss / grad_accum  # scale the loss to account for gradient accumulation
        total = total + loss.detach()
        # backward pass, with gradient scaling if training in fp16
        scaler.scale(loss).backward()
    # clip the gradient
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    # step the optimizer and scaler if training in fp16
    scaler.step(optimizer)
    scaler.update()
    # flush the gradients as soon as we can, no need for this memory anymore
    optimizer.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def estimate_loss(model, loaders: dict, eval_iters: int, ctx, world_size: int = 1) -> dict:
    """Mean loss over eval_iters batches of each split, the batches spread over the DDP ranks and averaged."""
    out = {}
    model.eval()
    for split, loader in loaders.items():
        n = max(1, math.ceil(eval_iters / world_size))
        losses = torch.zeros(n)
        for k in range(n):
            X, Y = loader.next_batch()
            with ctx:
                _, loss = model(X, Y)
            losses[k] = loss.item()
        mean = losses.mean().to(X.device)
        if world_size > 1:
            torch.distributed.all_reduce(mean)
            mean /= world_size
        out[split] = mean.item()
    model.train()
    return out


def save_checkpoint(path: str, checkpoint: dict):
    """torch.save to a temporary file, renamed into place: a crash mid-save never leaves a broken checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def model_args_from(cfg, vocab_size: int) -> dict:
    return dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                bias=cfg.bias, vocab_size=vocab_size, dropout=cfg.dropout)


def init_model(cfg, data_dir: str):
    """The model to train and, when resuming, the checkpoint it came from."""
    checkpoint = None
    if cfg.init_from == 'scratch':
        # attempt to derive vocab_size from the dataset
        meta_path = os.path.join(data_dir, 'meta.pkl')
        vocab_size = 50304  # GPT-2's 50257 rounded up for efficiency
        if os.path.exists(meta_path):
            import pickle
            with open(meta_path, 'rb') as f:
                vocab_size = pickle.load(f)['vocab_size']
            print0(f"found vocab_size = {vocab_size} (inside {meta_path})")
        print0("Initializing a new model from scratch")
        model = GPT(GPTConfig(**model_args_from(cfg, vocab_size)), seed=cfg.seed)
    else:
        # a checkpoint of this project, OpenAI's GPT-2 or a Hugging Face folder, as sample.py loads them
        print0(f"Initializing from {cfg.init_from}" + (f" ({cfg.out_dir}/ckpt.pt)" if cfg.init_from == 'resume' else ''))
        model, checkpoint = load_model(cfg.init_from, cfg.out_dir, 'cpu', dropout=cfg.dropout)
        c = model.config
        if checkpoint is not None:
            wanted = model_args_from(cfg, c.vocab_size)
            differ = {k: (getattr(c, k), wanted[k]) for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias')
                      if getattr(c, k) != wanted[k]}
            if differ:
                raise SystemExit(f"error: the checkpoint in {cfg.out_dir} has a different model shape than the "
                                 f"config: " + ', '.join(f"{k}={a} in the checkpoint, {b} in the config"
                                                         for k, (a, b) in differ.items())
                                 + ". Resume with the config the run started with")
        else:
            if cfg.block_size > c.block_size:
                raise SystemExit(f"error: block_size={cfg.block_size} is above the pretrained model's "
                                 f"{c.block_size}: use --block_size={c.block_size} or less")
            if cfg.bias is not True or (cfg.n_layer, cfg.n_head, cfg.n_embd) != (c.n_layer, c.n_head, c.n_embd):
                print0(f"note: the shape of {cfg.init_from} overrides n_layer/n_head/n_embd/bias from the config")
            # crop down the model block size if desired, using model surgery
            if cfg.block_size < c.block_size:
                model.crop_block_size(cfg.block_size)
    return model, checkpoint


def main(argv: list[str]):
    cfg = configure(defaults, argv)
    world_size = int(os.environ.get('WORLD_SIZE', 1))  # checked before any process waits for the others
    if cfg.gradient_accumulation_steps % world_size:
        raise SystemExit(f"error: gradient_accumulation_steps={cfg.gradient_accumulation_steps} is not divisible by "
                         f"the {world_size} processes: make it a multiple of {world_size}")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, cfg.backend)
    master_process = rt.master_process
    # world_size number of processes will be training simultaneously, so we can scale
    # down the desired gradient accumulation iterations per process proportionally
    grad_accum = cfg.gradient_accumulation_steps // rt.world_size
    tokens_per_iter = grad_accum * rt.world_size * cfg.batch_size * cfg.block_size
    print0(f"config: {vars(cfg)}")
    print0(f"tokens per iteration will be: {tokens_per_iter:,} on {rt.world_size} process(es), "
           f"device {rt.device}, dtype {rt.dtype}")
    if master_process:
        os.makedirs(cfg.out_dir, exist_ok=True)

    # model
    data_dir = dataset_dir(cfg.dataset)
    model, checkpoint = init_model(cfg, data_dir)
    model.to(rt.device)
    model_args = asdict(model.config)
    print0(f"number of parameters: {model.get_num_params() / 1e6:.2f}M")

    # data: each split read through the checked loader; eval batches are the same at every evaluation
    def loader(split: str, seed: int):
        return TokenLoader(data_dir, split, cfg.batch_size, cfg.block_size, model_args['vocab_size'], rt.device,
                           seed, rt.rank, rt.world_size)
    train_loader = loader('train', cfg.seed)
    eval_loaders = {split: loader(split, cfg.seed + 1) for split in ('train', 'val')}  # checks both splits now
    eval_start = {split: ld.state_dict() for split, ld in eval_loaders.items()}

    # optimizer and GradScaler (a no-op unless training in float16)
    scaler = torch.amp.GradScaler(rt.device_type, enabled=(rt.dtype == 'float16'))
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                           rt.device_type)
    iter_num = 0
    best_val_loss = 1e9
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint['optimizer'])
        if 'scaler' in checkpoint:
            scaler.load_state_dict(checkpoint['scaler'])
        iter_num = checkpoint['iter_num']
        best_val_loss = checkpoint['best_val_loss']
        if 'loader' in checkpoint:
            train_loader.load_state_dict(checkpoint['loader'])
        rng = checkpoint.get('rng', {}).get(rt.rank)
        if rng is not None:  # dropout continues with the masks it would have drawn
            torch.set_rng_state(rng['cpu'])
            if 'cuda' in rng and rt.device_type == 'cuda':
                torch.cuda.set_rng_state(rng['cuda'], rt.device)
        checkpoint = None  # free up memory

    raw_model = model  # the unwrapped, uncompiled module: what checkpoints save
    if cfg.compile:
        print0("compiling the model... (takes a ~minute)")
        model = torch.compile(model)  # requires PyTorch 2.0
    if rt.ddp:
        model = DDP(model, device_ids=[rt.local_rank] if rt.device_type == 'cuda' else None)

    # logging
    log_metrics = lambda metrics: None  # noqa: E731
    if cfg.wandb_log and master_process:
        import wandb
        wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=vars(cfg))
        log_metrics = wandb.log
    hellaswag = None
    if cfg.hellaswag_interval > 0:
        from hellaswag import evaluate_hellaswag, load_examples
        hellaswag = load_examples(cfg.hellaswag_file, cfg.hellaswag_limit or None)

    def checkpoint_state() -> dict:
        # every rank's RNG state and the loader position, gathered so that rank 0 can save them
        rng = {'cpu': torch.get_rng_state()}
        if rt.device_type == 'cuda':
            rng['cuda'] = torch.cuda.get_rng_state(rt.device)
        rngs = [rng]
        if rt.ddp:
            rngs = [None] * rt.world_size
            torch.distributed.all_gather_object(rngs, rng)
        return {
            'model': raw_model.state_dict(),
            'optimizer': optimizer.state_dict(),
            'scaler': scaler.state_dict(),
            'model_args': model_args,
            'iter_num': iter_num,
            'best_val_loss': best_val_loss,
            'config': vars(cfg),
            'loader': train_loader.state_dict(),
            'rng': dict(enumerate(rngs)),
            'world_size': rt.world_size,
        }

    # training loop
    t_start = t0 = time.time()
    start_iter = t0_iter = iter_num  # t0_iter: the iteration at which t0 was taken
    running_mfu = -1.0
    loss_sum = None
    while True:
        lr = get_lr(iter_num, cfg.learning_rate, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr) \
            if cfg.decay_lr else cfg.learning_rate

        # evaluate the loss on train/val sets and write checkpoints, and at the very end
        last = iter_num >= cfg.max_iters or cfg.eval_only
        if iter_num % cfg.eval_interval == 0 or last:
            for split, ld in eval_loaders.items():
                ld.load_state_dict(eval_start[split])
            losses = estimate_loss(model, eval_loaders, cfg.eval_iters, rt.ctx, rt.world_size)
            print0(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            metrics = {"iter": iter_num, "train/loss": losses['train'], "val/loss": losses['val'], "lr": lr,
                       "mfu": running_mfu * 100}
            if hellaswag is not None and (iter_num % cfg.hellaswag_interval == 0 or last):
                acc = evaluate_hellaswag(raw_model, hellaswag, rt, progress=False)
                print0(f"step {iter_num}: hellaswag acc_norm {acc['acc_norm']:.4f}, acc {acc['acc']:.4f}")
                metrics.update({"hellaswag/acc_norm": acc['acc_norm'], "hellaswag/acc": acc['acc']})
            log_metrics(metrics)
            improved = losses['val'] < best_val_loss
            best_val_loss = min(best_val_loss, losses['val'])  # never overwritten by a worse loss
            if (improved or cfg.always_save_checkpoint) and iter_num > 0 and not cfg.eval_only:
                state = checkpoint_state()  # a collective under DDP: every rank takes part
                if master_process:
                    print(f"saving checkpoint to {cfg.out_dir}")
                    save_checkpoint(os.path.join(cfg.out_dir, 'ckpt.pt'), state)
                state = None
            t0, t0_iter = time.time(), iter_num  # evaluation time is not training time
        if last:
            break

        loss_sum = train_step(model, optimizer, scaler, train_loader, grad_accum, rt.ctx, cfg.grad_clip, lr)
        iter_num += 1

        # timing and logging
        if iter_num % cfg.log_interval == 0 and master_process:
            # get loss as float: a CPU-GPU sync point, only every log_interval
            lossf = loss_sum.item()
            t1 = time.time()
            dt = (t1 - t0) / (iter_num - t0_iter)
            t0, t0_iter = t1, iter_num
            done = iter_num - start_iter
            if done >= 5 * cfg.log_interval:  # let the training loop settle a bit
                mfu = raw_model.estimate_mfu(cfg.batch_size * grad_accum, dt, cfg.peak_flops)
                if mfu is not None:
                    running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
            eta = (cfg.max_iters - iter_num) * (time.time() - t_start) / done
            mfu_text = f"{running_mfu * 100:.2f}%" if running_mfu >= 0 else "n/a"
            print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.3e}, time {dt * 1000:.2f}ms, "
                  f"{tokens_per_iter / dt:,.0f} tok/s, mfu {mfu_text}, eta {eta / 60:.1f}min", flush=True)
            log_metrics({"iter": iter_num, "train/loss_step": lossf, "lr": lr})

    if rt.ddp:
        # wait for rank 0 to finish the last checkpoint: a rank that exits while the collective it just joined is
        # still being released by gloo's threads can abort ("terminate called without an active exception")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1:])
