"""
Loss and perplexity of a model on a text file or on a prepared split, reading every token once in windows of
block_size (each token predicted from the ones before it in its window), so checkpoints compare without training code.

    python perplexity.py --init_from=gpt2 --text_file=essay.txt
    python perplexity.py --init_from=resume --out_dir=out-shakespeare-char --dataset=shakespeare_char --split=val
"""
import math
import sys

import numpy as np
import torch

from configurator import config_defaults, configure
from nanogpt.checkpoint import load_model
from nanogpt.errors import one_line_errors
from nanogpt.files import read_text
from nanogpt.runtime import print0, setup_runtime
from nanogpt.tokenfiles import DTYPE, Dataset, dataset_dir
from nanogpt.tokenizer import check_tokens, get_tokenizer

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (from out_dir/ckpt.pt), a GPT-2 name ('gpt2', 'gpt2-xl', ...) or a HF directory
out_dir = 'out'  # ignored if init_from is not 'resume'
text_file = ''  # a text file, tokenized with the model's vocabulary (its dataset's meta.pkl, else GPT-2 BPE)
dataset = ''  # or a prepared dataset (data/<dataset> or a path) ...
split = 'val'  # ... and its split
batch_size = 8  # windows per forward pass
max_tokens = 0  # evaluate only the first max_tokens tokens (0: all)
device = 'auto'  # 'auto' (cuda, else mps, else cpu), or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where supported on cuda, else float16; float32 elsewhere), 'float32', ...
seed = 1337
# -----------------------------------------------------------------------------
RANGES = dict(batch_size='> 0', max_tokens='>= 0', split=('train', 'val'))
defaults = config_defaults(globals())


@torch.no_grad()
def token_loss(model, tokens: np.ndarray, batch_size: int, device, ctx) -> tuple[float, int]:
    """Mean cross-entropy (nats) of tokens[1:] given what precedes each in its block_size window, and its count."""
    T = model.config.block_size
    starts = list(range(0, len(tokens) - 1, T))
    total, count = 0.0, 0
    for i in range(0, len(starts), batch_size):
        rows = [tokens[s:s + T + 1].astype(np.int64) for s in starts[i:i + batch_size]]
        width = max(len(r) for r in rows)
        batch = torch.full((len(rows), width), -1, dtype=torch.long)
        for j, r in enumerate(rows):
            batch[j, :len(r)] = torch.from_numpy(r)
        x, y = batch[:, :-1].clamp(min=0).to(device), batch[:, 1:].contiguous().to(device)
        with ctx:
            _, loss = model(x, y)  # mean over the targets that are not -1 (padding)
        n = int((y != -1).sum())
        total += loss.float().item() * n
        count += n
    return total / count, count


def main(argv: list[str]):
    cfg = configure(defaults, argv, RANGES)
    if bool(cfg.text_file) == bool(cfg.dataset):
        raise SystemExit("error: pass either --text_file=PATH or --dataset=NAME (with --split)")
    if cfg.text_file and cfg.split != defaults['split']:
        raise SystemExit("error: --split chooses a split of --dataset; a --text_file is read whole: drop --split")
    runtime = setup_runtime(cfg.device, cfg.dtype, cfg.seed, ddp=False)
    model, checkpoint = load_model(cfg.init_from, cfg.out_dir, runtime.device)
    model.eval()
    if cfg.text_file:
        encode, _ = get_tokenizer(checkpoint)
        text = read_text(cfg.text_file, 'text file')
        tokens = np.array(encode(text, f'--text_file={cfg.text_file}'), dtype=np.int64)
        source = cfg.text_file
    else:
        data = Dataset(dataset_dir(cfg.dataset), splits=(cfg.split,))
        check_tokens(checkpoint, cfg.out_dir if cfg.init_from == 'resume' else cfg.init_from, data)
        pieces, n = [], 0
        for path in data.split(cfg.split)[0]:  # memory-mapped; only as many shards as max_tokens needs
            pieces.append(np.memmap(path, dtype=DTYPE, mode='r'))
            n += len(pieces[-1])
            if cfg.max_tokens and n >= cfg.max_tokens:
                break
        tokens = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        source = f"{data.dir} {cfg.split}"
    if cfg.max_tokens:
        tokens = tokens[:cfg.max_tokens]
    if len(tokens) < 2:
        raise SystemExit(f"error: {source} has {len(tokens)} token(s)"
                         f"{f' within --max_tokens={cfg.max_tokens}' if cfg.max_tokens else ''}, at least 2 are needed "
                         f"(a loss is of a token given those before it)")
    if tokens.max() >= model.config.vocab_size:
        raise SystemExit(f"error: {source} holds token id {tokens.max()}, outside the model's vocabulary of "
                         f"{model.config.vocab_size}")
    loss, n = token_loss(model, tokens, cfg.batch_size, runtime.device, runtime.ctx)
    print0(f"{source}: {n:,} tokens, loss {loss:.4f}, perplexity {math.exp(loss) if loss < 700 else math.inf:.3f}")


if __name__ == '__main__':
    one_line_errors(defaults)
    main(sys.argv[1:])
