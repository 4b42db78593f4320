"""
Fitting a run to the machine it has, before its first step (train.py and bench.py, after wrap_model):
    fit_step   one forward and backward on the wrapped model at the configured micro-batch: out of memory, the
               largest divisor of batch_size that fits (gradient accumulation rises by the same factor, so the tokens
               per iteration and the math stay the same); torch.compile failing at that first call (no C++
               compiler, no Triton, a backend error), the model unwrapped and run uncompiled.
The probe consumes no data and no randomness and steps nothing: the run that follows is exactly the run that would
have happened with the chosen sizes from the start. Under DDP every rank tries each size and all take the smallest
that fits everywhere; under FSDP a rank that ran out of memory inside a collective would leave the others waiting,
so there only the compile check runs. sample.py's batches fit the same way (generate_fitted).
"""

from contextlib import nullcontext

import torch

from util import out_of_memory


def device_memory(device) -> str:
    """'23.6 GiB' for a CUDA device (what this process may use of it: torch.cuda.set_per_process_memory_fraction
    lowers that), '' elsewhere."""
    device = torch.device(device)
    if device.type != 'cuda':
        return ''
    index = torch.cuda.current_device() if device.index is None else device.index
    allowed = torch.cuda.get_device_properties(index).total_memory * torch.cuda.get_per_process_memory_fraction(index)
    return f"{allowed / 2**30:.1f} GiB"


def _free(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.empty_cache()


def _try_step(model, batch_size: int, block_size: int, device, ctx, optimizer):
    """'ok', 'oom', or the exception of a failed call, for two forward and backward passes of batch_size rows of
    token 0 (no data read), without gradient sync, with room held for AdamW's state when it does not exist yet."""
    room = []
    try:
        # AdamW allocates two tensors per parameter at its first step: held here, so the size chosen fits them too
        if not optimizer.state:
            room = [torch.empty_like(p) for group in optimizer.param_groups for p in group['params'] for _ in '12']
        x = torch.zeros((batch_size, block_size), dtype=torch.long, device=device)
        sync = model.no_sync() if isinstance(model, torch.nn.parallel.DistributedDataParallel) else nullcontext()
        with sync:
            for _ in range(2):  # twice, as accumulation does: the second runs beside the first one's gradients
                with ctx:
                    _, loss = model(x, x)
                loss.backward()
                del loss
        return 'ok'
    except Exception as e:
        return 'oom' if out_of_memory(e) else e
    finally:
        del room
        for p in model.parameters():
            p.grad = None
        _free(device)


def fit_step(model, runtime, batch_size: int, block_size: int, ctx, optimizer, fit: bool, compiled: bool,
             sharded: bool, uncompiled) -> tuple[object, int, bool]:
    """(the model to train, the micro-batch size that fits, whether the model is compiled): see the module's
    docstring. uncompiled() wraps the model again without compiling it. SystemExit when not even one row fits."""
    rng = torch.get_rng_state()  # dropout in the probe draws random numbers: given back after
    cuda_rng = torch.cuda.get_rng_state(runtime.device) if runtime.device_type == 'cuda' else None
    sizes = [d for d in range(batch_size, 0, -1) if batch_size % d == 0] if fit and not sharded else [batch_size]
    chosen, k = None, 0
    while k < len(sizes):
        result = _try_step(model, sizes[k], block_size, runtime.device, ctx, optimizer)
        # every rank acts on the worst outcome of any: 0 it fits, 1 out of memory, 2 another error
        outcome = torch.tensor([0.0 if result == 'ok' else 1.0 if result == 'oom' else 2.0], device=runtime.device)
        if runtime.ddp:
            torch.distributed.all_reduce(outcome, op=torch.distributed.ReduceOp.MAX)
        if outcome.item() == 2.0 and compiled:  # torch.compile cannot work here (on this rank or another)
            cause = 'it failed on another rank'
            if isinstance(result, Exception):  # the first line that is not torch's advice on debugging
                lines = [line for line in str(result).splitlines() if line.strip() and 'TORCH' not in line]
                cause = lines[0].strip()[:200] if lines else type(result).__name__
            if runtime.master_process or isinstance(result, Exception):
                print(f"note: torch.compile does not work here ({cause}): training uncompiled (--compile=False "
                      f"silences this)")
            model, compiled = uncompiled(), False
            continue  # the same size again, uncompiled
        if isinstance(result, Exception):
            raise result
        if outcome.item() == 2.0:
            raise SystemExit("error: the first step failed on another rank: its error is above")
        if outcome.item() == 0.0:
            chosen = sizes[k]
            break
        k += 1
    if compiled and chosen is not None and chosen != sizes[0]:
        torch._dynamo.reset()  # the sizes tried would leave a graph compiled for any batch: one for this size
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, runtime.device)
    if chosen is None:
        memory = device_memory(runtime.device)
        raise SystemExit(f"error: out of memory{f' ({memory} on {runtime.device})' if memory else ''} for one "
                         f"forward and backward at batch_size={sizes[-1]}, block_size={block_size}: use a smaller "
                         f"model or block_size, --chunked_loss=True, or --data_parallel=fsdp on several GPUs")
    return model, chosen, compiled


@torch.no_grad()
def generate_fitted(model, x, num_samples: int, max_new_tokens: int, **sampling) -> torch.Tensor:
    """num_samples continuations of the prompt x (1, t) as few batches as memory allows: decoding a token reads
    every weight once whatever the batch, so rows cost little until memory runs out. (num_samples, t + new)."""
    rows = num_samples
    while True:
        try:
            out = [model.generate(x.expand(min(rows, num_samples - k), -1), max_new_tokens, **sampling)
                   for k in range(0, num_samples, rows)]
            return torch.cat(out)
        except Exception as e:
            if out_of_memory(e) is None or rows == 1:
                raise
            rows = (rows + 1) // 2
            _free(x.device)
