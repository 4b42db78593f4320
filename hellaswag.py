"""
HellaSwag (https://rowanzellers.com/hellaswag/) validation accuracy of a GPT-2 BPE model, scored completion style
as in build-nanogpt: each of the four endings follows the context, and the ending whose tokens have the lowest
mean cross-entropy wins (acc_norm); the lowest summed cross-entropy gives acc.

    python hellaswag.py --init_from=gpt2                 # OpenAI's weights; also gpt2-medium/-large/-xl
    python hellaswag.py --init_from=resume --out_dir=out # a checkpoint of this project
    python hellaswag.py --init_from=gpt2 --limit=500     # the first 500 examples
    torchrun --standalone --nproc_per_node=8 hellaswag.py --init_from=gpt2-xl

Reference figures on the 10,042 validation examples: gpt2 acc 0.2859, acc_norm 0.2955; gpt2-xl acc 0.3842,
acc_norm 0.4893. Each example in the jsonl file looks like
{"ind": 24, "ctx": "A man is sitting on a roof. he", "label": 3,
 "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "...", "starts pulling up roofing on a roof."]}
"""
import json
import math
import os
import sys
from contextlib import nullcontext

import torch
from torch.nn import functional as F

from configurator import config_defaults, configure
from nanogpt import fields
from nanogpt.checkpoint import load_model
from nanogpt.errors import one_line_errors, takes
from nanogpt.files import download, read_text
from nanogpt.runtime import end_distributed, print0, setup_runtime
from nanogpt.tokenfiles import REPO_DIR
from nanogpt.tokenizer import gpt2_encoding

URL = 'https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl'
N_VAL = 10042

# -----------------------------------------------------------------------------
init_from = 'gpt2'  # 'resume' (from out_dir/ckpt.pt), a GPT-2 name ('gpt2', 'gpt2-xl', ...) or a HF directory
out_dir = 'out'  # ignored if init_from is not 'resume'
data_file = ''  # a local hellaswag_val.jsonl; empty: download it once into cache_dir
cache_dir = os.path.join(REPO_DIR, 'data', 'hellaswag')
limit = 0  # evaluate the first `limit` examples only (0: all)
device = 'auto'  # 'auto' (cuda, else mps, else cpu), or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where supported on cuda, else float16; float32 elsewhere), 'float32', ...
seed = 1337
# -----------------------------------------------------------------------------
RANGES = dict(limit='>= 0')
defaults = config_defaults(globals())


def cached_val_file(cache_dir: str) -> str:
    """The path of hellaswag_val.jsonl in cache_dir, downloaded the first time."""
    path = os.path.join(cache_dir, 'hellaswag_val.jsonl')
    if not os.path.exists(path):
        key = 'data_file' if takes('data_file') else 'hellaswag_file'  # hellaswag.py's key, or train.py's
        download(URL, path, f"Offline, download {URL} elsewhere and pass --{key}=PATH", 'cache_dir')
    return path


# the fields of a HellaSwag row that are read, and what each must be
ROW = dict(ctx=('a non-empty string', lambda v: fields.text(v) and v.strip() != ''),
           endings=('a list of 4 non-empty strings', lambda v: isinstance(v, list) and len(v) == 4 and all(
               fields.text(e) and e.strip() != '' for e in v)),
           label=('the number 0, 1, 2 or 3 (not a string)', lambda v: type(v) is int and 0 <= v <= 3))


def load_examples(data_file: str = '', limit: int | None = None, cache_dir: str = cache_dir) -> list[dict]:
    path = data_file or cached_val_file(cache_dir)
    examples = []
    # lines end in \n only: U+2028 and the like, which str.splitlines() would also split at, may be inside a string
    what = f"HellaSwag file (--{'data_file' if takes('data_file') else 'hellaswag_file'})" if data_file else \
        'HellaSwag file'
    for line_no, line in enumerate(read_text(path, what).split('\n'), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError:
            raise SystemExit(f"error: {path}:{line_no} is not a HellaSwag record (ctx, 4 endings, label 0-3)"
                             f": it is not JSON; use hellaswag_val.jsonl") from None
        fields.check(example, ROW, f"{path}:{line_no}", "use hellaswag_val.jsonl, whose rows have ctx, 4 endings "
                     "and a label 0-3", required=tuple(ROW))
        examples.append(example)
        if limit and len(examples) == limit:
            break
    if not examples:
        raise SystemExit(f"error: {path} holds no HellaSwag records: pass hellaswag_val.jsonl")
    return examples


def render_example(example: dict, enc, block_size: int):
    """tokens (4, T) of context + each ending, mask (4, T) of the ending tokens, and the label. The context is
    cut from the left when a row would not fit in block_size."""
    ctx_tokens = enc.encode(example['ctx'], disallowed_special=())
    rows, masks = [], []
    for ending in example['endings']:
        # ' ' because GPT-2's tokens carry the space before a word
        end_tokens = enc.encode(' ' + ending, disallowed_special=())
        row = (ctx_tokens + end_tokens)[-block_size:]
        n_end = min(len(end_tokens), len(row))
        rows.append(row)
        masks.append([0] * (len(row) - n_end) + [1] * n_end)
    T = max(len(r) for r in rows)
    tokens = torch.zeros((4, T), dtype=torch.long)
    mask = torch.zeros((4, T), dtype=torch.long)
    for i, (row, m) in enumerate(zip(rows, masks)):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, :len(m)] = torch.tensor(m)
    return tokens, mask, example['label']


@torch.no_grad()
def score_example(model, tokens, mask, ctx=None):
    """Summed and mean cross-entropy of each row's ending tokens, (4,) each."""
    targets = tokens[:, 1:].clone()
    targets[mask[:, 1:] == 0] = -1  # only the ending's tokens are scored
    chunked, model.chunked_loss = getattr(model, 'chunked_loss', False), False  # the logits, not only the loss
    try:
        with ctx or nullcontext():
            logits, _ = model(tokens[:, :-1], targets)  # passing targets returns the logits at every position
    finally:
        model.chunked_loss = chunked
    losses = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                             reduction='none').view(targets.shape)
    n = (targets != -1).sum(dim=1)
    return losses.sum(dim=1), losses.sum(dim=1) / n


def evaluate_hellaswag(model, examples: list[dict], runtime, progress: bool = True) -> dict:
    """acc and acc_norm of a GPT (unwrapped: no DDP, no compile, as the examples' lengths vary) over examples; under
    DDP each rank scores every world_size-th example and counts are summed."""
    from tqdm import tqdm
    enc = gpt2_encoding()
    config = model.config
    if config.vocab_size < enc.n_vocab:
        raise SystemExit(f"error: HellaSwag needs a GPT-2 BPE model, this one has a vocabulary of {config.vocab_size}")
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.long)  # correct (acc_norm), correct (acc), total
    shard = examples[runtime.rank::runtime.world_size]  # this rank's examples
    # every rank runs as many forward passes, the last one repeated where its share is one short: a sharded
    # (FSDP) model's forward is a collective that all ranks must join
    rounds = math.ceil(len(examples) / runtime.world_size)
    for i in tqdm(range(rounds), desc='hellaswag', disable=not (progress and runtime.master_process)):
        example = shard[min(i, len(shard) - 1)] if shard else examples[0]
        tokens, mask, label = render_example(example, enc, config.block_size + 1)
        sum_loss, mean_loss = score_example(model, tokens.to(runtime.device), mask.to(runtime.device), runtime.ctx)
        if i < len(shard):
            counts += torch.tensor([int(mean_loss.argmin().item() == label), int(sum_loss.argmin().item() == label), 1])
    if runtime.world_size > 1:
        counts = counts.to(runtime.device)
        torch.distributed.all_reduce(counts)
        counts = counts.cpu()
    model.train(was_training)
    correct_norm, correct, total = counts.tolist()
    return {'acc_norm': correct_norm / max(total, 1), 'acc': correct / max(total, 1), 'n': total}


def main(argv: list[str]):
    cfg = configure(defaults, argv, RANGES)
    runtime = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    examples = load_examples(cfg.data_file, cfg.limit or None, cfg.cache_dir)
    if not cfg.data_file and not cfg.limit and len(examples) != N_VAL:
        print0(f"warning: {len(examples)} examples, expected {N_VAL}")
    model, _ = load_model(cfg.init_from, cfg.out_dir, runtime.device)
    result = evaluate_hellaswag(model, examples, runtime)
    print0(f"hellaswag {cfg.init_from}: {result['n']} examples, acc_norm {result['acc_norm']:.4f}, "
           f"acc {result['acc']:.4f}")
    if runtime.ddp:
        end_distributed()


if __name__ == '__main__':
    one_line_errors(defaults)
    main(sys.argv[1:])
