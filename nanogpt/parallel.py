"""
Training over several processes, the one path train.py and bench.py both take: placing the model (moved to the
device, or sharded with FSDP2), compiling and wrapping it (DDP), the gradients of a step (synchronised on its last
micro-step only; their norm over all ranks), and what a whole checkpoint needs from a sharded
run: the state gathered into whole tensors, the optimizer state cut back into this rank's shards on resume, and
every rank's RNG state.

data_parallel = 'ddp' keeps a whole copy of the model on each process; 'fsdp' shards weights, gradients and AdamW
state over them. Without torchrun both mean one process, unsharded.
"""

import math
from contextlib import nullcontext

import torch
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor, init_device_mesh
from torch.nn.parallel import DistributedDataParallel as DDP

from nanogpt.runtime import PTDTYPES, print0, rng_state, set_rng_state

DATA_PARALLEL = ('ddp', 'fsdp')  # the values of the data_parallel key


def shard_model(model, device_type: str, dtype: str):
    """FSDP2, in place: every Block is one unit of sharding, and the root holds the rest (wte, which is lm_head's
    weight, so the tying survives as one sharded parameter; wpe; ln_f). A unit's weights are gathered just before it
    runs and freed after. In bfloat16/float16 the weights are cast for compute and the gradients reduced in float32
    over float32 master weights: this policy replaces autocast."""
    mesh = init_device_mesh(device_type, (torch.distributed.get_world_size(),))
    param_dtype = None if dtype == 'float32' else PTDTYPES[dtype]
    mp_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)
    return model


def place_model(model, runtime, data_parallel: str):
    """Put the model where it trains, before its optimizer is made (so that under FSDP the optimizer holds this
    rank's shards only); returns the context for forward passes: autocast, or nothing under FSDP, whose
    mixed-precision policy casts the weights instead."""
    if runtime.ddp and data_parallel == 'fsdp':
        shard_model(model, runtime.device_type, runtime.dtype)  # the whole model never sits on one GPU
        return nullcontext()
    if data_parallel == 'fsdp':
        print0("note: data_parallel='fsdp' shards over the processes torchrun starts; one process trains unsharded")
    model.to(runtime.device)
    return runtime.ctx


def wrap_model(model, runtime, data_parallel: str, compile: bool):
    """The model the step runs: compiled when asked, then wrapped in DDP under torchrun (FSDP's sharded modules need
    no wrapper). Keep the unwrapped model for checkpoints: its state_dict has no _orig_mod. or module. prefix."""
    if compile:
        print0("compiling the model... (takes a ~minute)")
        model = torch.compile(model)
    if runtime.ddp and data_parallel == 'ddp':
        model = DDP(model, device_ids=[runtime.local_rank] if runtime.device_type == 'cuda' else None)
    return model


def sync_gradients(model, sync: bool):
    """Whether the next backward synchronises the gradients over the ranks (DDP all-reduces them, FSDP reduce-scatters
    them): only on a step's last micro-step; until then each rank accumulates its own (FSDP still reshards the
    weights after each use). Nothing without torchrun."""
    if isinstance(model, DDP):
        model.require_backward_grad_sync = sync  # read by DDP's forward
    elif isinstance(getattr(model, '_orig_mod', model), FSDPModule):  # torch.compile wraps the sharded model
        model.set_requires_gradient_sync(sync)


def clip_grad_norm(model, max_norm: float) -> torch.Tensor:
    """The gradients' norm over the whole model, the same on every rank (under FSDP, over all ranks' shards), after
    clipping them to max_norm (0: not clipped, the norm still measured)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm != 0.0 else float('inf'))
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def full_state_dict(state, master: bool):
    """A state dict (nested dicts and lists, e.g. the optimizer's) with FSDP's sharded DTensors gathered into whole
    tensors on the master's CPU, the format DDP and single-GPU runs save. A collective under FSDP: every rank calls
    it, only the master keeps the tensors (the others get None). A tensor met twice, like the tied wte/lm_head
    weight, is gathered once and stays shared."""
    done = {}

    def full(value):
        if isinstance(value, dict):
            return {k: full(v) for k, v in value.items()}
        if isinstance(value, list):
            return [full(v) for v in value]
        if not isinstance(value, torch.Tensor):
            return value
        if id(value) not in done:
            if isinstance(value, DTensor):
                whole = value.full_tensor()  # the all-gather every rank joins
                done[id(value)] = whole.cpu() if master else None
            else:
                done[id(value)] = value.detach()
        return done[id(value)]
    return full(state)


def _numbers(value) -> list | None:
    """A number or a tuple of numbers (betas) as a list, else None (a flag, a name, a tensor)."""
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    return values if values and all(type(v) in (int, float) for v in values) else None


def load_optimizer_state(optimizer, state: dict) -> list[str]:
    """optimizer.load_state_dict of a whole (unsharded) state, as any checkpoint of this project holds: under FSDP
    each rank keeps, of every state tensor, the shard that matches its shard of the parameter. So a DDP checkpoint
    resumes under FSDP and the other way round, on any number of ranks."""
    for i, (group, saved_group) in enumerate(zip(optimizer.param_groups, state['param_groups'])):
        for key, live in group.items():  # lr, betas, eps, weight_decay...: finite numbers, as this optimizer's are
            if _numbers(live) is not None and key in saved_group:
                saved = _numbers(saved_group[key])
                if saved is None or len(saved) != len(_numbers(live)) or not all(map(math.isfinite, saved)):
                    raise ValueError(f"param group {i}'s {key} is {saved_group[key]!r}, where this optimizer has "
                                     f"{live!r}")
        for param, index in zip(group['params'], saved_group['params']):
            for k, v in state['state'].get(index, {}).items():  # moments are shaped like their parameter
                if isinstance(v, torch.Tensor) and v.numel() > 1 and v.shape != param.shape:
                    raise ValueError(f"{k} of parameter {index} is {tuple(v.shape)}, not {tuple(param.shape)}")
            if isinstance(param, DTensor) and index in state['state']:
                state['state'][index] = {
                    # src_data_rank=None: every rank holds the whole tensor and cuts its own shard, no communication
                    k: distribute_tensor(v.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
                    if isinstance(v, torch.Tensor) and v.shape == param.shape else v
                    for k, v in state['state'][index].items()}
    # this run's settings (betas, weight_decay, its muon_learning_rate's lr_scale...), not the saved ones: a resume
    # with --beta2=0.99 trains with it, and its config says so; the moments and step counts are the checkpoint's
    settings = [{k: v for k, v in group.items() if k not in ('params', 'lr', 'initial_lr')}
                for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    changed = {}
    for group, ours in zip(optimizer.param_groups, settings):
        for key, value in ours.items():
            if _numbers(value) is not None and group.get(key) != value:
                changed[key] = f"{key}={value!r} (the checkpoint's: {group.get(key)!r})"
            group[key] = value
    return list(changed.values())


def rng_states(runtime) -> dict:
    """Every rank's RNG states, {rank: runtime.rng_state}, gathered on all ranks (a collective under DDP) so that
    rank 0 can save them: after a resume each rank draws the dropout masks it would have drawn."""
    rng = rng_state(runtime.device)
    rngs = [rng]
    if runtime.ddp:
        rngs = [None] * runtime.world_size
        torch.distributed.all_gather_object(rngs, rng)
    return dict(enumerate(rngs))


def restore_rng(rngs: dict, runtime):
    """This rank's RNG states from rng_states' dict, where the checkpoint has them: dropout continues with the
    masks it would have drawn."""
    if (rng := rngs.get(runtime.rank)) is not None:
        set_rng_state(rng, runtime.device)
