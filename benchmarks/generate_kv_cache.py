"""
Generation speed with and without the KV cache, in one process: a GPT-2 124M-shaped model with random weights,
greedy decoding (so both runs must produce the same tokens, which is checked).

    python benchmarks/generate_kv_cache.py                          # CPU, batch 1, 500 new tokens
    python benchmarks/generate_kv_cache.py --device=cuda --max_new_tokens=1000
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch_size', type=int, default=1)
    parser.add_argument('--prompt_tokens', type=int, default=1)
    parser.add_argument('--max_new_tokens', type=int, default=500)
    args = parser.parse_args()

    model = GPT(GPTConfig(vocab_size=50257)).to(args.device).eval()
    prompt = torch.randint(50257, (args.batch_size, args.prompt_tokens), device=args.device)
    print(f"GPT-2 124M shape, random weights, {args.device}, {torch.get_num_threads()} threads, batch "
          f"{args.batch_size}, {args.prompt_tokens} prompt token(s), {args.max_new_tokens} new tokens, greedy")
    model.generate(prompt, 5, temperature=0.0)  # warm-up
    results = {}
    for use_kv_cache in (True, False):
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        t0 = time.time()
        out = model.generate(prompt, args.max_new_tokens, temperature=0.0, use_kv_cache=use_kv_cache)
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        dt = time.time() - t0
        results[use_kv_cache] = (dt, out)
        print(f"{'with' if use_kv_cache else 'without'} KV cache: {dt:.2f}s, "
              f"{args.max_new_tokens * args.batch_size / dt:.1f} tokens/s")
    assert torch.equal(results[True][1], results[False][1]), "the two runs generated different tokens"
    print(f"speed-up {results[False][0] / results[True][0]:.1f}x, identical tokens")


if __name__ == '__main__':
    main()
