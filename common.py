"""
What train.py, sample.py, bench.py and the evaluation scripts share: one runtime setup (device, DDP process group,
dtype, autocast, seeding), the device's peak FLOPS for MFU, rank-0 printing, loading a model from a checkpoint or a
pretrained name, and the tokenizer that goes with it.
"""

import os
import pickle
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from data.tokenfiles import read_meta
from model import GPT, GPTConfig

REPO_DIR = os.path.dirname(os.path.abspath(__file__))
PTDTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def print0(*args, **kwargs):
    """print on the master process only (RANK 0, or no torchrun at all)"""
    if int(os.environ.get('RANK', 0)) == 0:
        print(*args, **kwargs)


@dataclass
class Runtime:
    device: str  # e.g. 'cuda:3', 'mps', 'cpu'
    device_type: str  # 'cuda', 'mps' or 'cpu', for autocast, the scaler and fused AdamW
    dtype: str  # 'float32', 'bfloat16' or 'float16'
    ctx: object  # autocast context for forward passes (nullcontext in float32)
    ddp: bool
    rank: int
    local_rank: int
    world_size: int

    @property
    def master_process(self) -> bool:
        return self.rank == 0


def default_device() -> str:
    if torch.cuda.is_available():
        return 'cuda'
    if torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'


def setup_runtime(device: str = 'auto', dtype: str = 'auto', seed: int = 1337, backend: str = 'auto') -> Runtime:
    """Set up the device, the DDP process group when launched by torchrun, the autocast context and the seeds."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank = int(os.environ.get('RANK', 0))
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    if device == 'auto':
        device = default_device()
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        raise SystemExit(f"error: device={device!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f"error: device={device!r} but CUDA is not available here: use --device=cpu or --device=mps")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        raise SystemExit("error: device='mps' but MPS is not available here: use --device=cpu")
    if ddp:
        if backend == 'auto':
            backend = 'nccl' if device_type == 'cuda' else 'gloo'
        if device_type == 'cuda':
            device = f'cuda:{local_rank}'  # one GPU per process
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():  # bench.py sets up again for each device or dtype it sweeps
            torch.distributed.init_process_group(backend=backend)
    if dtype == 'auto':
        if device_type == 'cuda':
            dtype = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        else:
            dtype = 'float32'
    if dtype not in PTDTYPES:
        raise SystemExit(f"error: dtype={dtype!r}: use one of {', '.join(PTDTYPES)} or auto")
    torch.manual_seed(seed + rank)  # every rank draws its own dropout masks (the loaders seed themselves)
    if device_type == 'cuda':
        torch.set_float32_matmul_precision('high')  # TF32 in matmuls and convolutions
        torch.backends.cudnn.allow_tf32 = True
    ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=PTDTYPES[dtype])
    return Runtime(device, device_type, dtype, ctx, ddp, rank, local_rank, world_size)


def end_distributed(code: int = 0):
    """End a torchrun process once its work is done: wait for every rank, free the process group, flush the output
    and leave without Python's interpreter shutdown. gloo's worker threads can still be releasing the last
    collective's tensors when the main thread returns; a thread that needs the GIL during interpreter shutdown
    aborts the whole process ("terminate called without an active exception", a torchrun failure after a run that
    succeeded)."""
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# Peak dense bf16 tensor-core FLOPS, matched against torch.cuda.get_device_name(); first match wins,
# so the more specific names come first
PEAK_BF16_FLOPS = [
    ('GB200', 2.5e15), ('B200', 2.25e15), ('B100', 1.75e15),
    ('H200', 989e12), ('GH200', 989e12), ('H100 NVL', 835e12), ('H100 PCIe', 756e12), ('H100', 989e12),
    ('H800', 989e12), ('H20', 148e12),
    ('A100', 312e12), ('A800', 312e12), ('A10G', 70e12), ('A10', 125e12), ('A30', 165e12), ('A40', 150e12),
    ('L40S', 362e12), ('L40', 181e12), ('L4', 121e12),
    ('RTX 6000 Ada', 364e12), ('RTX A6000', 155e12),
    ('RTX 5090', 210e12), ('RTX 4090', 165e12), ('RTX 4080', 97e12), ('RTX 3090', 71e12), ('RTX 3080', 59e12),
    ('V100', 125e12), ('T4', 65e12),  # no bf16 on these two: their fp16 peak
    ('MI300X', 1307e12), ('MI325X', 1307e12), ('MI250X', 383e12),
]


def device_peak_flops(device) -> float | None:
    """The peak bf16 FLOPS of a CUDA device from PEAK_BF16_FLOPS, or None when it is not a known GPU."""
    device = torch.device(device)
    if device.type != 'cuda' or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def dataset_dir(dataset: str) -> str:
    """data/<dataset> of this repository, or `dataset` itself when it is a path."""
    if os.sep in dataset or os.path.isdir(dataset):
        return dataset
    return os.path.join(REPO_DIR, 'data', dataset)


def load_checkpoint(ckpt_path: str, device) -> dict:
    if not os.path.exists(ckpt_path):
        raise SystemExit(f"error: no checkpoint at {ckpt_path}: train one with train.py (out_dir sets where), "
                         f"or pass --init_from=gpt2 for OpenAI's weights")
    try:
        # weights_only: tensors and plain data only, so loading a checkpoint never runs code from it
        checkpoint = torch.load(ckpt_path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r'GLOBAL (\S+)', str(e))  # torch's message names the class or function it met
        if found is None:
            raise SystemExit(f"error: could not read the checkpoint {ckpt_path} (UnpicklingError: {e}): the file is "
                             f"damaged or not a PyTorch checkpoint") from None
        reason = f"it refers to {found.group(1)}"
        raise SystemExit(f"error: refused to load {ckpt_path}: it holds objects other than tensors and plain data, "
                         f"which could run code when loaded ({reason}); use checkpoints you trust, written by "
                         f"this project or nanoGPT") from None
    except Exception as e:
        raise SystemExit(f"error: could not read the checkpoint {ckpt_path} ({type(e).__name__}: {e}): "
                         f"the file is damaged or not a PyTorch checkpoint") from None
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
    model = GPT(GPTConfig(**model_args))
    # checkpoints of a torch.compile'd model (nanoGPT's) carry this prefix
    state_dict = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()}
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith('.attn.bias')}  # old causal-mask buffers
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise SystemExit(f"error: the weights in {source} do not fit its model_args {model_args}: {e}") from e
    return model


def load_model(init_from: str, out_dir: str = 'out', device='cpu', dropout: float | None = None):
    """A model from 'resume' (out_dir/ckpt.pt), a GPT-2 name or a Hugging Face directory, and the checkpoint
    it came from (None for pretrained weights)."""
    checkpoint = None
    if init_from == 'resume':
        ckpt_path = os.path.join(out_dir, 'ckpt.pt')
        checkpoint = load_checkpoint(ckpt_path, 'cpu')
        if dropout is not None:
            checkpoint['model_args']['dropout'] = dropout
        model = model_from_checkpoint(checkpoint, ckpt_path)
    else:
        try:
            model = GPT.from_pretrained(init_from, None if dropout is None else dict(dropout=dropout))
        except (ValueError, RuntimeError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from e
    return model.to(device), checkpoint


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: any class or function in the file is refused, so
    loading cannot run code from it."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, and only plain data is loaded")


def read_vocab(data_dir: str) -> list[str] | None:
    """The character vocabulary of a dataset (index -> character): meta.json's 'chars', else nanoGPT's meta.pkl
    read as plain data only. None when the dataset has neither (GPT-2 BPE)."""
    meta = read_meta(data_dir)
    if meta is not None:
        if 'chars' in meta:
            return list(meta['chars'])
        if meta.get('tokenizer') != 'char':
            return None
        if not os.path.exists(os.path.join(data_dir, 'meta.pkl')):
            raise SystemExit(f"error: {data_dir} is character-level data, but its vocabulary (meta.pkl) is "
                             f"missing: prepare the dataset again")
    pkl_path = os.path.join(data_dir, 'meta.pkl')
    if not os.path.exists(pkl_path):
        return None
    try:
        with open(pkl_path, 'rb') as f:
            meta = _PlainUnpickler(f).load()
        itos = meta['itos']
        return [itos[i] for i in range(meta['vocab_size'])]
    except Exception as e:
        raise SystemExit(f"error: {pkl_path} is refused ({type(e).__name__}: {e}): a character vocabulary is a dict "
                         f"of plain data; prepare the dataset again") from None


def get_tokenizer(checkpoint: dict | None):
    """encode(str) -> list[int] and decode(list[int]) -> str: the character vocabulary the checkpoint carries (or,
    for older checkpoints, its dataset's), else GPT-2's BPE."""
    checkpoint = checkpoint or {}
    chars, source = checkpoint.get('vocab'), 'the checkpoint'
    dataset = checkpoint.get('config', {}).get('dataset')
    if chars is None and dataset:
        source = dataset_dir(dataset)
        chars = read_vocab(source)
    vocab_size = checkpoint.get('model_args', {}).get('vocab_size', 50304)
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

    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    # a model trained with the padded vocabulary (50304) may, rarely, emit an id the tokenizer does not have
    return (lambda s: enc.encode(s, allowed_special={'<|endoftext|>'})), \
        (lambda ids: enc.decode([i for i in ids if i < enc.n_vocab]))
