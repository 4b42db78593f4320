"""
Fitting a run to the machine it has, before its first step (train.py and bench.py, after wrap_model):
    fit_step   one forward and backward on the wrapped model at the configured micro-batch (a forward only for an
               evaluation): out of memory, the largest divisor of batch_size that fits (gradient accumulation rises
               by the same factor, so the tokens per iteration and the math stay the same); torch.compile failing at
               that first call (no C++ compiler, no Triton, a backend error), the model unwrapped and run uncompiled.
The probe consumes no data and no randomness and steps nothing: the run that follows is exactly the run that would
have happened with the chosen sizes from the start. Under DDP every rank tries each size and all take the smallest
that fits everywhere; under FSDP a rank that ran out of memory inside a collective would leave the others waiting,
so there the configured size is tried alone, and running out of memory ends the run at once.
    fitted_sizes   the batch_size and gradient_accumulation_steps a run trains with once fit_step has chosen, and
    resumed_sizes  those of a resume: the sizes its run was fitted to when it started, so its batch stream continues.
sample.py's batches fit the same way (generate_fitted).
"""

import gc
import os
import re
import sys
import traceback
from contextlib import nullcontext

import torch

from nanogpt.errors import causes, out_of_memory
from nanogpt.runtime import print0, rng_state, set_rng_state


def device_memory(device) -> str:
    """'23.6 GiB' for a CUDA device (what this process may use of it: torch.cuda.set_per_process_memory_fraction
    lowers that), '' elsewhere."""
    device = torch.device(device)
    if device.type != 'cuda':
        return ''
    index = torch.cuda.current_device() if device.index is None else device.index
    allowed = torch.cuda.get_device_properties(index).total_memory * torch.cuda.get_per_process_memory_fraction(index)
    return f"{allowed / 2**30:.1f} GiB"


def check_memory(nbytes: int, what: str, fix: str):
    """SystemExit, before any work, when what needs more than this machine's memory (Linux; elsewhere torch's own
    out-of-memory error says it later)."""
    try:
        memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > memory:
        raise SystemExit(f"error: {what} would take {nbytes / 2**30:.3g} GiB of memory, more than this machine's "
                         f"{memory / 2**30:.0f} GiB: {fix}")


def check_model_size(n_layer: int, n_embd: int, vocab_size: int, block_size: int, **_):
    """check_memory of a model's float32 weights alone, before it is built: building it would take the machine's
    memory layer by layer (n_layer=2**63 never ended)."""
    params = vocab_size * n_embd + block_size * n_embd + n_layer * (12 * n_embd ** 2 + 13 * n_embd) + 2 * n_embd
    check_memory(4 * params, f"a model of n_layer={n_layer}, n_embd={n_embd}, block_size={block_size} and "
                             f"vocab_size={vocab_size} ({params:.3g} parameters): its weights alone",
                 "choose a smaller model")


def free_memory(device):
    """What a failed attempt held, given back: its tensors (gc: an exception's frames can sit in a cycle) and the
    CUDA allocator's cache of them, which CUDA's own libraries (cuBLAS, Triton's kernels, NCCL) cannot use."""
    gc.collect()
    if torch.device(device).type == 'cuda':
        torch.cuda.empty_cache()


def _try_step(model, batch_size: int, block_size: int, device, ctx, optimizer, train: bool):
    """'ok', 'oom', or the exception of a failed call, for two forward and backward passes of batch_size rows of
    token 0 (no data read; one forward without gradients when not train), without gradient sync, with room held for
    AdamW's state when it does not exist yet."""
    room, logits, loss, training = [], None, None, model.training
    try:
        # AdamW allocates two tensors per parameter at its first step: held here, so the size chosen fits them too
        if train and not optimizer.state:
            room = [torch.empty_like(p) for group in optimizer.param_groups for p in group['params'] for _ in '12']
        # inputs and targets are two tensors, as the loader's: compiled, model(x, x) would be another graph
        x = torch.zeros((batch_size, block_size), dtype=torch.long, device=device)
        y = torch.zeros_like(x)
        if not train:  # as estimate_loss runs it: in eval mode (compiled, the graph it will use), no gradients
            model.eval()
            with torch.no_grad(), ctx:
                model(x, y)
            return 'ok'
        sync = model.no_sync() if isinstance(model, torch.nn.parallel.DistributedDataParallel) else nullcontext()
        with sync:
            for _ in range(2):  # twice, as accumulation does: the second runs beside the first one's gradients
                with ctx:
                    logits, loss = model(x, y)  # the logits live on into the next pass, as in train_step
                loss.backward()
        return 'ok'
    except Exception as e:
        if out_of_memory(e):
            return 'oom'
        for cause in causes(e):  # e is kept, to be raised or named: not the tensors its frames (and its causes') hold
            traceback.clear_frames(cause.__traceback__)
        return e
    finally:
        del room, logits, loss
        model.train(training)
        for p in model.parameters():
            p.grad = None


def _compile_failure(e: Exception) -> str:
    """The first line of a torch.compile failure that names its cause, not torch's framing or advice."""
    lines = [line.strip() for line in str(e).splitlines()
             if line.strip() and 'TORCH' not in line and not re.fullmatch(r"backend='\w+' raised:", line.strip())]
    return lines[0][:200] if lines else type(e).__name__


def _no_fit(runtime, batch_size: int, block_size: int, train: bool, sharded: bool) -> SystemExit:
    memory = device_memory(runtime.device)
    advice = ['a smaller model or block_size', '--chunked_loss=True']
    if batch_size > 1:  # only the configured size was tried (--fit_batch_size=False, or under FSDP)
        advice.insert(0, f"a smaller batch_size{' (more gradient_accumulation_steps)' if train else ''}")
    if not sharded:
        advice.append('--data_parallel=fsdp on several GPUs')
    return SystemExit(f"error: out of memory{f' ({memory} on {runtime.device})' if memory else ''} for one "
                      f"{'forward and backward' if train else 'forward'} at batch_size={batch_size}, block_size="
                      f"{block_size}: use {', '.join(advice[:-1])}, or {advice[-1]}")


def fit_step(wrap, runtime, batch_size: int, block_size: int, ctx, optimizer, fit: bool, compiled: bool,
             sharded: bool, train: bool = True) -> tuple[object, int, bool]:
    """(the model to train, the micro-batch size that fits, whether the model is compiled): see the module's
    docstring. wrap(compile) makes the model the step runs (parallel.wrap_model): called here, so that this is the one
    reference to a wrapper that fails, let go before the next is made. train=False probes a forward only (an
    evaluation). SystemExit when not even one row fits."""
    model = wrap(compiled)
    rng = rng_state(runtime.device)  # dropout in the probe draws random numbers: given back after
    sizes = [d for d in range(batch_size, 0, -1) if batch_size % d == 0] if fit and not sharded else [batch_size]
    chosen, k = None, 0
    while k < len(sizes):
        result = _try_step(model, sizes[k], block_size, runtime.device, ctx, optimizer, train)
        if result != 'ok':
            free_memory(runtime.device)
        # under FSDP the other ranks may wait in a collective this rank left: it ends the run alone
        if sharded and result == 'oom':
            raise _no_fit(runtime, batch_size, block_size, train, sharded)
        if sharded and isinstance(result, Exception) and not compiled:
            raise result
        # every rank acts on the worst outcome of any: 0 it fits, 1 out of memory, 2 torch.compile failed, 3 an
        # error that is not ours to handle (raised as the first step would have raised it)
        code = 0 if result == 'ok' else 1 if result == 'oom' else 2 if compiled else 3
        outcome = torch.tensor([float(code)], device=runtime.device)
        if runtime.ddp:
            torch.distributed.all_reduce(outcome, op=torch.distributed.ReduceOp.MAX)
        if code == 3:
            raise result
        if outcome.item() == 3.0:
            raise SystemExit("error: the first step failed on another rank: its error is above")
        if outcome.item() == 2.0:  # torch.compile cannot work here (on this rank or another)
            # said once, by the first rank where it failed: that one knows why
            first = torch.tensor([float(runtime.rank if code == 2 else runtime.world_size)], device=runtime.device)
            if runtime.ddp:
                torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
            if first.item() == runtime.rank:
                print(f"note: torch.compile does not work here ({_compile_failure(result)}): training uncompiled "
                      f"(--compile=False silences this)", flush=True)
            # the failed wrapper given back before the next is made: DDP's gradient buckets are 4 bytes a parameter
            result = model = None
            torch._dynamo.reset()
            free_memory(runtime.device)
            model, compiled = wrap(False), False
            continue  # the same size again, uncompiled
        if outcome.item() == 0.0:
            chosen = sizes[k]
            break
        k += 1
        if compiled:  # the next size compiled afresh, static, as the run will use it (not a graph for any batch)
            torch._dynamo.reset()
    set_rng_state(rng, runtime.device)
    if chosen is None:
        error = _no_fit(runtime, sizes[-1], block_size, train, sharded)
        if not runtime.ddp:
            raise error
        # every rank ends here: one says why, and none ends before it has (torchrun would stop it mid-sentence)
        if runtime.master_process:
            print(error.code, file=sys.stderr, flush=True)
        torch.distributed.barrier()
        raise SystemExit(1)
    return model, chosen, compiled


def fitted_sizes(micro_batch: int, batch_size: int, block_size: int, grad_accum: int, world_size: int, device,
                 train: bool = True) -> tuple[int, int]:
    """(batch_size, gradient accumulation steps per process) of a run whose fit_step chose micro_batch rows: the
    same tokens per iteration as configured, in micro-batches that fit. An evaluation keeps its batches (forwarded
    in parts of micro_batch rows)."""
    if micro_batch == batch_size:
        return batch_size, grad_accum
    memory = device_memory(device)
    too_big = f"note: batch_size={batch_size} does not fit in the memory of {device}{f' ({memory})' * bool(memory)}"
    if not train:
        print0(f"{too_big}: evaluating each batch in parts of {micro_batch} rows, the same losses")
        return batch_size, grad_accum
    tokens = batch_size * block_size * grad_accum * world_size
    grad_accum *= batch_size // micro_batch
    print0(f"{too_big}: training with batch_size={micro_batch} and gradient_accumulation_steps="
           f"{grad_accum * world_size}, the same {tokens:,} tokens per iteration")
    return micro_batch, grad_accum


def resumed_sizes(saved: dict, batch_size: int, grad_accum: int, world_size: int) -> tuple[int, int]:
    """(batch_size, gradient accumulation steps per process) of a resume: those of the checkpoint's config where its
    run was fitted to memory when it started (smaller micro-batches, the same rows per iteration, as many ranks or a
    divisor of them), so the batch stream continues as it was drawn; else the configured ones."""
    saved_batch, saved_accum = saved.get('batch_size', batch_size), saved.get('gradient_accumulation_steps', 0)
    if saved_batch < batch_size and saved_batch * saved_accum == batch_size * grad_accum * world_size and \
            saved_accum % world_size == 0:
        print0(f"note: resuming with the checkpoint's batch_size={saved_batch} and gradient_accumulation_steps="
               f"{saved_accum}, fitted to memory when the run started")
        return saved_batch, saved_accum // world_size
    return batch_size, grad_accum


@torch.no_grad()
def generate_fitted(model, x, num_samples: int, max_new_tokens: int, **sampling) -> torch.Tensor:
    """num_samples continuations of the prompt x (1, t) as few batches as memory allows: decoding a token reads
    every weight once whatever the batch, so rows cost little until memory runs out. (num_samples, t + new)."""
    rows = num_samples
    rng = rng_state(x.device)
    while True:
        set_rng_state(rng, x.device)  # a retry in smaller batches draws what a run at that size draws
        try:
            out = [model.generate(x.expand(min(rows, num_samples - k), -1), max_new_tokens, **sampling)
                   for k in range(0, num_samples, rows)]
            return torch.cat(out)
        except Exception as e:
            if out_of_memory(e) is None or rows == 1:
                raise
        rows = (rows + 1) // 2
        free_memory(x.device)
