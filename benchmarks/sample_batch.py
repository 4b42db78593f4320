"""
sample.py's num_samples as one batch against one after another (nanoGPT's way), and this model's generate against
transformers' generate on the same weights, in one process: a GPT-2 124M-shaped model with random weights saved as
a Hugging Face folder, sampling with the KV cache in both.

    python benchmarks/sample_batch.py                               # CPU, 10 samples of 200 new tokens
    python benchmarks/sample_batch.py --device=cuda --max_new_tokens=500
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT  # noqa: E402
from nanogpt.fit import generate_fitted  # noqa: E402


def timed(fn, device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    t0 = time.time()
    out = fn()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.time() - t0, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--num_samples', type=int, default=10)
    parser.add_argument('--prompt_tokens', type=int, default=8)
    parser.add_argument('--max_new_tokens', type=int, default=200)
    args = parser.parse_args()
    import transformers

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()  # GPT-2 124M's shape, random weights
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        model = GPT.from_pretrained(folder).to(args.device).eval()
    hf = hf.to(args.device)
    prompt = torch.randint(50257, (1, args.prompt_tokens), device=args.device)
    n, new = args.num_samples, args.max_new_tokens
    print(f"GPT-2 124M shape, random weights, {args.device}, {torch.get_num_threads()} threads, {n} samples of "
          f"{new} new tokens after {args.prompt_tokens} prompt tokens, temperature 1, top_k 200")
    sampling = dict(temperature=1.0, top_k=200)
    model.generate(prompt, 5, **sampling)  # warm-up
    with torch.no_grad():
        t_seq, _ = timed(lambda: [model.generate(prompt, new, **sampling) for _ in range(n)], args.device)
        t_batch, out = timed(lambda: generate_fitted(model, prompt, n, new, **sampling), args.device)
        t_hf, hf_out = timed(lambda: hf.generate(prompt.expand(n, -1), attention_mask=torch.ones_like(
            prompt.expand(n, -1)), do_sample=True, top_k=200, max_new_tokens=new, min_new_tokens=new,
            pad_token_id=50256), args.device)
        # greedy decoding must agree token for token: the same weights, the same function
        greedy = model.generate(prompt, 20, temperature=0.0)
        hf_greedy = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=20,
                                pad_token_id=50256)
    assert out.shape == hf_out.shape == (n, args.prompt_tokens + new)
    assert torch.equal(greedy, hf_greedy), "this model and transformers decode the same weights differently"
    rows = [('one after another (nanoGPT)', t_seq), ('one batch (sample.py)', t_batch),
            ('transformers generate, one batch', t_hf)]
    for name, t in rows:
        print(f"{name:34s} {t:6.2f} s  {n * new / t:8.1f} tokens/s")
    print(f"one batch is {t_seq / t_batch:.1f}x faster than one after another, and {t_hf / t_batch:.2f}x the speed of "
          f"transformers' generate; greedy decoding identical to transformers' for 20 tokens")


if __name__ == '__main__':
    main()
