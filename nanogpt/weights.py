"""
Weight files from outside, read safely, and the Hugging Face GPT-2 format both ways. torch_load reads tensors and
plain data only (a pickle that refers to code is refused, naming it); check_shapes holds a config against its
weights' shapes before anything is built. Reading OpenAI's checkpoints (from the hub, or a local folder holding
config.json and model.safetensors or pytorch_model.bin) hands GPT.from_pretrained a config and tensors; writing
makes such a folder of this project's models for export_hf.py. The GPT-2 facts (Conv1D transposes, config keys) are
written here once. Nothing here imports model.py: the model builds itself from what this module reads.
"""

import errno
import json
import os
import pickle
import re
import sys
import warnings

import torch

from nanogpt import fields
from nanogpt.errors import takes
from nanogpt.files import atomic_path, open_source, read_json


def torch_load(path: str, what: str):
    """torch.load of a file from outside, as tensors and plain data only (weights_only), so that loading never runs
    code from it; SystemExit naming the file when it holds anything else or is damaged."""
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's concern
            warnings.simplefilter('ignore')
            with open_source(path, 'rb') as f:
                return torch.load(f, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r'GLOBAL (\S+)', str(e)) or _code_in(path)  # torch's message names it, or a scan does
        if found is None:  # torch's own reason, without its advice to load with weights_only=False
            reason = re.search(r'(Unsupported [^\n]*|Unpickler error: *\S[^\n]*)', str(e))
            reason = reason.group(1).strip() if reason else str(e).splitlines()[0][:100]
            raise SystemExit(f"error: could not read the {what} {path} ({reason}): the file is damaged or not a "
                             f"PyTorch {what}") from None
        name = found if isinstance(found, str) else found.group(1)
        raise SystemExit(f"error: refused to load {path}: it holds objects other than tensors and plain data, "
                         f"which could run code when loaded (it refers to {name}); use {what}s you trust, "
                         f"written by this project, nanoGPT or transformers") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):  # the file itself may be sound
            raise SystemExit(f"error: could not open the {what} {path} ({e.strerror}): check its permissions") \
                from None
        raise SystemExit(f"error: could not read the {what} {path} ({e.strerror or e}): the file is damaged (cut "
                         f"short?) or not a PyTorch {what}") from None
    except Exception as e:
        raise SystemExit(f"error: could not read the {what} {path} ({type(e).__name__}: {str(e).splitlines()[0]}): "
                         f"the file is damaged or not a PyTorch {what}") from None


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
            with open_source(path, 'rb') as f:
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


# The Hugging Face hub repositories of OpenAI's checkpoints, and their shapes
PRETRAINED = {
    'gpt2': ('openai-community/gpt2', dict(n_layer=12, n_head=12, n_embd=768)),  # 124M params
    'gpt2-medium': ('openai-community/gpt2-medium', dict(n_layer=24, n_head=16, n_embd=1024)),  # 350M params
    'gpt2-large': ('openai-community/gpt2-large', dict(n_layer=36, n_head=20, n_embd=1280)),  # 774M params
    'gpt2-xl': ('openai-community/gpt2-xl', dict(n_layer=48, n_head=25, n_embd=1600)),  # 1558M params
}
# OpenAI's checkpoints use a Conv1D module, whose weights are the transpose of a Linear's
TRANSPOSED = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
GPT2_VOCAB = 50257  # GPT-2's BPE vocabulary; <|endoftext|> is its last id
HF_REQUIRED = ('n_layer', 'n_head', 'n_embd', 'n_positions', 'vocab_size')  # the config.json keys read
BPE_URL = 'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/'  # tiktoken's source of GPT-2's files


# the fields of a GPT-2 config.json that are read, and what each must be
HF_CONFIG = dict(n_layer=fields.POSITIVE_INT, n_head=fields.POSITIVE_INT, n_embd=fields.POSITIVE_INT,
                 n_positions=fields.POSITIVE_INT, vocab_size=fields.POSITIVE_INT, model_type=fields.STR,
                 activation_function=fields.STR, layer_norm_epsilon=fields.NUMBER,
                 n_inner=('an integer or null', lambda v: v is None or fields.positive_int(v)),
                 scale_attn_weights=fields.BOOL, scale_attn_by_inverse_layer_idx=fields.BOOL,
                 reorder_and_upcast_attn=fields.BOOL, tie_word_embeddings=fields.BOOL)


def config_args_from_hf(hf_config: dict, source: str) -> dict:
    """GPTConfig arguments from a Hugging Face GPT2Config, every field read checked, refusing what this model cannot
    reproduce."""
    fields.check(hf_config, HF_CONFIG, f"{source} config.json", "export or download the model again", HF_REQUIRED)
    if hf_config['n_embd'] % hf_config['n_head']:
        raise SystemExit(f"error: {source} config.json: n_embd={hf_config['n_embd']} is not divisible by n_head="
                         f"{hf_config['n_head']}: export or download the model again")
    if hf_config.get('model_type', 'gpt2') != 'gpt2':
        raise ValueError(f"{source}: model_type is {hf_config['model_type']!r}, only 'gpt2' checkpoints can be loaded")
    n_embd = hf_config['n_embd']
    gpt2_values = {  # key: (GPT-2's value, this checkpoint's)
        'activation_function': ('gelu_new', hf_config.get('activation_function', 'gelu_new')),
        'layer_norm_epsilon': (1e-5, hf_config.get('layer_norm_epsilon', 1e-5)),
        'n_inner': (None, hf_config.get('n_inner')),
        'scale_attn_weights': (True, hf_config.get('scale_attn_weights', True)),
        'scale_attn_by_inverse_layer_idx': (False, hf_config.get('scale_attn_by_inverse_layer_idx', False)),
        'reorder_and_upcast_attn': (False, hf_config.get('reorder_and_upcast_attn', False)),
        'tie_word_embeddings': (True, hf_config.get('tie_word_embeddings', True)),  # lm_head is wte
    }
    for key, (gpt2, value) in gpt2_values.items():
        if value != gpt2 and not (key == 'n_inner' and value == 4 * n_embd):
            raise ValueError(f"{source}: {key}={value!r} is not supported (GPT-2 uses {gpt2!r})")
    return dict(n_layer=hf_config['n_layer'], n_head=hf_config['n_head'], n_embd=n_embd,
                block_size=hf_config['n_positions'], vocab_size=hf_config['vocab_size'], dropout=0.0)


def hf_config_from(config, vocab_size: int) -> dict:
    """The config.json of a GPTConfig, for transformers' GPT2LMHeadModel: every field true of the model (a character
    model has no end-of-text token, so no bos/eos id)."""
    end_of_text = GPT2_VOCAB - 1 if vocab_size >= GPT2_VOCAB else None
    return {
        'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2',
        'n_layer': config.n_layer, 'n_head': config.n_head, 'n_embd': config.n_embd,
        'n_positions': config.block_size, 'n_ctx': config.block_size, 'vocab_size': vocab_size, 'n_inner': None,
        'activation_function': 'gelu_new', 'layer_norm_epsilon': 1e-5, 'initializer_range': 0.02,
        'resid_pdrop': config.dropout, 'embd_pdrop': config.dropout, 'attn_pdrop': config.dropout,
        'scale_attn_weights': True, 'scale_attn_by_inverse_layer_idx': False, 'reorder_and_upcast_attn': False,
        'tie_word_embeddings': True, 'use_cache': True,
        'bos_token_id': end_of_text, 'eos_token_id': end_of_text,
    }


# -----------------------------------------------------------------------------
# reading

def our_name(k: str) -> str:
    """This model's name of a Hugging Face GPT-2 weight (GPT2Model checkpoints lack the 'transformer.' prefix)."""
    return k if k.startswith(('transformer.', 'lm_head.')) else 'transformer.' + k


def check_tensors(state_dict: dict, source: str):
    """SystemExit unless every weight is a dense floating-point tensor of 16 bits or more, with data: integers or
    float8 (a damaged or quantised file) would be cast into the model in silence, a sparse or meta one fail in it."""
    def odd(v) -> str | None:
        if v.layout != torch.strided or v.is_meta:
            return f"a {'meta (data-less)' if v.is_meta else str(v.layout).removeprefix('torch.')} tensor"
        return None if v.is_floating_point() and v.dtype.itemsize >= 2 else str(v.dtype).removeprefix('torch.')
    name = next((k for k, v in state_dict.items() if odd(v)), None)
    if name:
        raise SystemExit(f"error: {source}: weight {name} is {odd(state_dict[name])}, not a float32, bfloat16 or "
                         f"float16 tensor: the file is damaged or quantised; use float32, bfloat16 or float16 weights")


# the names of GPT-2's weights, as this model names them (read_weights): a file with others is another model's
GPT2_NAMES = re.compile(r'^(lm_head\.weight|transformer\.(wte|wpe)\.weight|transformer\.ln_f\.(weight|bias)|'
                        r'transformer\.h\.\d+\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.'
                        r'(weight|bias))$')


def read_weights(weights_path: str, raw: dict | None = None) -> dict:
    """A Hugging Face GPT-2 weights file (or its tensors, raw) as a state_dict of this model: its keys, Linear (not
    Conv1D) layout."""
    if raw is None and weights_path.endswith('.safetensors'):
        from safetensors.torch import load_file
        raw = load_file(weights_path)
    elif raw is None:
        raw = torch_load(weights_path, 'weights file')
    state_dict = {}
    for k, v in raw.items():
        if k.endswith(('.attn.bias', '.attn.masked_bias')):  # causal-mask buffers, not parameters
            continue
        k = our_name(k)
        state_dict[k] = v.t() if k.endswith(TRANSPOSED) else v
    check_tensors(state_dict, weights_path)
    others = [k for k in state_dict if not GPT2_NAMES.match(k)]
    if others:
        raise SystemExit(f"error: {weights_path} holds weights GPT-2 has not ({', '.join(others[:3])}"
                         f"{' ...' * (len(others) > 3)}): it is another model's")
    head, wte = state_dict.get('lm_head.weight'), state_dict.get('transformer.wte.weight')
    if head is not None and wte is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
        raise SystemExit(f"error: {weights_path}: lm_head.weight differs from transformer.wte.weight, which GPT-2 "
                         f"ties: the file is damaged or another model's")
    return state_dict


def weights_and_shapes(weights_path: str) -> tuple[dict | None, dict]:
    """(the tensors if they had to be loaded to be seen, else None; this model's name -> shape), from a
    safetensors header alone where it can: nothing is allocated before the shapes are checked."""
    if weights_path.endswith('.safetensors'):
        from safetensors import safe_open
        try:
            with safe_open(weights_path, 'pt') as f:
                return None, {our_name(k): tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:
            raise SystemExit(f"error: could not read {weights_path} ({type(e).__name__}: {e}): the file is damaged "
                             f"or not a safetensors file: download or export the model again") from None
    raw = torch_load(weights_path, 'weights file')
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise SystemExit(f"error: {weights_path} is not a state_dict of tensors: download or export the model again")
    return raw, {our_name(k): tuple(v.shape) for k, v in raw.items()}


def check_tokenizer(path: str):
    """SystemExit when a model folder carries a tokenizer that is not GPT-2's: its ids would be read as GPT-2 BPE
    (the only tokenizer read here besides a character vocabulary, meta.json)."""
    def model_vocab(t):  # tokenizer.json: {"model": {"vocab": {token: id}}}
        return t['model'].get('vocab') if isinstance(t, dict) and isinstance(t.get('model'), dict) else None
    for name, vocab in (('vocab.json', lambda t: t), ('tokenizer.json', model_vocab)):
        if os.path.exists(os.path.join(path, name)):
            tokens = vocab(read_json(os.path.join(path, name), name, 'export or download the model again'))
            if isinstance(tokens, dict) and len(tokens) != GPT2_VOCAB:
                raise SystemExit(f"error: {path} has a tokenizer of its own ({name}: {len(tokens):,} tokens, GPT-2's "
                                 f"has {GPT2_VOCAB:,}), which is not read here: this project reads GPT-2 BPE models "
                                 f"and character ones (meta.json) only")


def read_folder(path: str) -> tuple[dict, dict]:
    config_path = os.path.join(path, 'config.json')
    if not os.path.exists(config_path):
        # a run's folder: read by --init_from=resume there, or (to start a new run from it) exported first
        how = "export it with export_hf.py and pass the export" if takes('always_save_checkpoint') else \
            "pass --init_from=resume --out_dir=that folder"
        run = f" (it holds a ckpt.pt: {how})" * os.path.exists(os.path.join(path, 'ckpt.pt'))
        if any(os.path.exists(os.path.join(path, n)) for n in ('train.bin', 'train_000000.bin', 'meta.pkl')):
            run = " (it is a dataset's folder: give it as --dataset, and a model as --init_from)"
        snapshots = os.path.join(path, 'snapshots')  # the hub cache's folder of a model: its files are a level down
        if os.path.isdir(snapshots) and os.listdir(snapshots):
            run = f" (a hub cache folder: pass {os.path.join(snapshots, sorted(os.listdir(snapshots))[-1])})"
        raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face GPT-2 checkpoint{run}")
    hf_config = read_json(config_path, 'config.json', 'export or download the model again')
    config_args = config_args_from_hf(hf_config, path)
    check_tokenizer(path)
    for name in ('model.safetensors', 'pytorch_model.bin'):
        weights_path = os.path.join(path, name)
        if os.path.exists(weights_path):
            raw, shapes = weights_and_shapes(weights_path)
            check_shapes(config_args, shapes, config_path)
            return config_args, read_weights(weights_path, raw)
    if any(name.endswith('.index.json') for name in os.listdir(path)):
        raise FileNotFoundError(f"{path} holds a sharded checkpoint, which is not read here: save it as one file "
                                f"(transformers: save_pretrained(path, max_shard_size='100GB'))")
    raise FileNotFoundError(f"{path} has neither model.safetensors nor pytorch_model.bin")


def _reach_hub(repo_id: str):
    """One request to the hub, so that a machine offline is told at once rather than after the client's retries
    (five, about half a minute); OSError when it cannot be reached."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session
    if constants.HF_HUB_OFFLINE:  # the client refuses the network itself, at once
        return
    try:
        get_session().head(f"{constants.ENDPOINT}/{repo_id}/resolve/main/config.json", timeout=10)
    except Exception as e:
        raise OSError(f"cannot reach {constants.ENDPOINT}: {e}") from e


def download_pretrained(name: str) -> tuple[dict, dict]:
    from huggingface_hub import hf_hub_download
    repo_id, shape = PRETRAINED[name]
    print(f"loading weights from pretrained gpt: {name} ({repo_id} on the Hugging Face hub)")
    files = ('config.json', 'model.safetensors')
    try:
        try:  # already in the local cache: no network needed (OpenAI's files do not change)
            config_file, weights_file = (hf_hub_download(repo_id, f, local_files_only=True) for f in files)
        except Exception:
            _reach_hub(repo_id)
            config_file, weights_file = (hf_hub_download(repo_id, f) for f in files)
    except Exception as e:  # network, authentication or cache errors all end the same way
        raise RuntimeError(
            f"could not download {name} from the Hugging Face hub ({type(e).__name__}: {e}). If this machine is "
            f"offline, pass a local directory holding config.json and model.safetensors instead of {name!r}") from e
    config_args = config_args_from_hf(read_json(config_file, 'config.json', 'download the model again'), repo_id)
    check_shapes(config_args, weights_and_shapes(weights_file)[1], config_file)
    assert all(config_args[k] == v for k, v in shape.items()), f"{repo_id} is not shaped like {name}"
    return config_args, read_weights(weights_file)


def read_pretrained(name_or_path: str) -> tuple[dict, dict]:
    """GPTConfig arguments and a state_dict in this model's layout, from a GPT-2 name or a local folder."""
    if os.path.isdir(name_or_path):
        return read_folder(name_or_path)
    if name_or_path in PRETRAINED:
        return download_pretrained(name_or_path)
    run = f" (for a checkpoint: --init_from=resume --out_dir={os.path.dirname(name_or_path) or '.'})" * \
        name_or_path.endswith('.pt')
    names = (['resume'] if takes('init_from') else []) + list(PRETRAINED)  # resume: the checkpoint in out_dir
    meant = f" (did you mean {name_or_path.lower()!r}?)" * (name_or_path.lower() in names)
    raise ValueError(f"unknown pretrained model {name_or_path!r}{meant}: use one of {', '.join(names)} "
                     f"or a directory holding config.json and model.safetensors{run}")


# -----------------------------------------------------------------------------
# writing

def hf_state_dict(model, vocab_size: int) -> dict:
    """The model's weights under Hugging Face GPT-2 names: Conv1D weights transposed, absent biases as zeros
    (bias=False models compute the same function), lm_head left out (tied to wte)."""
    sd = {}
    for name, module in model.named_modules():
        weight = getattr(module, 'weight', None)
        if name == 'lm_head' or not isinstance(weight, torch.Tensor):
            continue
        w = weight.detach()
        sd[f'{name}.weight'] = w.t() if f'{name}.weight'.endswith(TRANSPOSED) else w
        if name.endswith(('ln_1', 'ln_2', 'ln_f', 'c_attn', 'c_proj', 'c_fc')):
            bias = getattr(module, 'bias', None)
            sd[f'{name}.bias'] = bias.detach() if bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    sd['transformer.wte.weight'] = sd['transformer.wte.weight'][:vocab_size]
    return {k: v.contiguous().clone() for k, v in sd.items()}


def write_file(path: str, data: bytes):
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def write_json(path: str, obj: dict):
    write_file(path, json.dumps(obj, indent=2).encode())


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
    write_json(os.path.join(dest, 'tokenizer_config.json'), tokenizer_config)
    return True


def write_pretrained(model, dest: str, vocab_size: int) -> bool:
    """Write model as a Hugging Face GPT-2 folder; True when GPT-2's tokenizer files went with it."""
    from safetensors.torch import save_file
    os.makedirs(dest, exist_ok=True)
    with atomic_path(os.path.join(dest, 'model.safetensors')) as tmp:
        save_file(hf_state_dict(model, vocab_size), tmp, metadata={'format': 'pt'})
    write_json(os.path.join(dest, 'config.json'), hf_config_from(model.config, vocab_size))
    # a character-level model has no Hugging Face tokenizer: its meta file stays the way to encode text
    return write_tokenizer(dest, model.config.block_size) if vocab_size >= GPT2_VOCAB else False
