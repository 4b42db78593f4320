"""
Sample from a trained model, or from OpenAI's GPT-2:

    python sample.py --out_dir=out-shakespeare-char
    python sample.py --init_from=gpt2-xl --start="What is the answer to life?" --num_samples=3
    python sample.py --init_from=path/to/hf_dir --start=FILE:prompt.txt
"""
import sys
import time

import torch

from configurator import config_defaults, configure
from nanogpt.checkpoint import load_model
from nanogpt.errors import one_line_errors
from nanogpt.fit import check_memory, generate_fitted
from nanogpt.files import read_text
from nanogpt.runtime import setup_runtime
from nanogpt.tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (from out_dir/ckpt.pt), a GPT-2 name ('gpt2', 'gpt2-xl', ...) or a HF directory
out_dir = 'out'  # ignored if init_from is not 'resume'
start = "\n"  # or "<|endoftext|>" or etc. Can also specify a file, use as: "FILE:prompt.txt"
num_samples = 10  # number of samples to draw
max_new_tokens = 500  # number of tokens generated in each sample
temperature = 0.8  # 1.0 = no change, < 1.0 = less random, > 1.0 = more random; 0.0 = always the most likely
top_k = 200  # retain only the top_k most likely tokens, clamp others to have 0 probability; None: all
top_p = None  # nucleus sampling: retain the most likely tokens up to this probability mass; None: all
seed = 1337
device = 'auto'  # 'auto' (cuda, else mps, else cpu), or e.g. 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where supported on cuda, else float16; float32 elsewhere), 'float32', ...
compile = False  # kept for nanoGPT's commands; generation with the KV cache is not compiled
# -----------------------------------------------------------------------------
RANGES = dict(num_samples='> 0', max_new_tokens='>= 0', temperature='>= 0', top_k='>= 1 or None', top_p='(0, 1]')
defaults = config_defaults(globals())


# -----------------------------------------------------------------------------
if __name__ == '__main__':
    one_line_errors(defaults)
    globals().update(vars(configure(defaults, sys.argv[1:], RANGES)))  # overrides from command line or config file
    runtime = setup_runtime(device, dtype, seed, ddp=False)
    device, ctx = runtime.device, runtime.ctx

    # model: a checkpoint of this project, or OpenAI's / a Hugging Face GPT-2
    model, checkpoint = load_model(init_from, out_dir, device)
    model.eval()
    if compile:
        # generation forwards a growing KV cache: every step would be a new shape to compile
        print("note: compile is ignored by sample.py; the KV cache already makes each step one token", file=sys.stderr)
    encode, decode = get_tokenizer(checkpoint)

    # encode the beginning of the prompt
    what = f'the prompt (--start={start[:40]})'
    if start.startswith('FILE:'):
        start = read_text(start[5:], 'prompt file (--start=FILE:path)')
    block_size = model.config.block_size
    if len(start) > 128 * block_size:  # no token is 128 characters long: its last block_size tokens stay
        print(f"note: the prompt is {len(start):,} characters long: only its last {128 * block_size:,} are read",
              file=sys.stderr)
        start = start[-128 * block_size:]
    start_ids = encode(start, what)
    if len(start_ids) == 0:
        raise SystemExit("error: the prompt is empty: pass --start with at least one character or token")
    if len(start_ids) > block_size:
        # the model sees at most block_size tokens, as generate() does once a sample outgrows it
        print(f"note: the prompt is {len(start_ids)} tokens long, the model's context {block_size}: "
              f"it conditions on the last {block_size}", file=sys.stderr)
    x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]
    check_memory(8 * num_samples * (len(start_ids) + max_new_tokens), f"{num_samples} sample(s) of "
                 f"{max_new_tokens:,} new tokens", "ask for fewer --max_new_tokens or --num_samples")

    # run generation, from the seed alone: however the model was built (which draws random numbers), the same
    # weights give the same samples. All num_samples at once, as one batch (or as few as memory allows): decoding a
    # token reads every weight whatever the batch, so ten rows cost about what one does
    torch.manual_seed(seed)
    t0 = time.time()
    with ctx:
        y = generate_fitted(model, x, num_samples, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    dt = time.time() - t0
    for row in y.tolist():
        print(decode(row))
        print('---------------', flush=True)
    print(f'({num_samples} x {max_new_tokens} new tokens in {dt:.2f}s, {num_samples * max_new_tokens / dt:.1f} '
          f'tokens/s)', file=sys.stderr)
