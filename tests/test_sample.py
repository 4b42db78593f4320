"""sample.py: samples from a checkpoint and a Hugging Face folder, prompts from files, long prompts cropped, errors."""
import pickle

import torch

from conftest import after_meta, run_script
from model import GPT, GPTConfig


def write_char_checkpoint(tmp_path, chars='\n abcdefgh'):
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    with open(data_dir / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': len(chars), 'itos': dict(enumerate(chars)),
                     'stoi': {c: i for i, c in enumerate(chars)}}, f)
    model_args = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=False, vocab_size=len(chars), dropout=0.0)
    model = GPT(GPTConfig(**model_args))
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    torch.save({'model': model.state_dict(), 'model_args': model_args, 'iter_num': 0, 'best_val_loss': 9.0,
                'config': {'dataset': str(data_dir)}}, out_dir / 'ckpt.pt')
    return out_dir


def test_sample_from_char_checkpoint(tmp_path):
    out_dir = write_char_checkpoint(tmp_path)
    proc = run_script('sample.py', f'--out_dir={out_dir}', '--start=abc', '--num_samples=2', '--max_new_tokens=40',
                      '--device=cpu', '--top_p=0.9')
    text = after_meta(proc.stdout)  # what follows the config and the vocabulary
    samples = text.split('---------------\n')[:-1]
    assert len(samples) == 2, proc.stdout
    for sample in samples:  # the prompt and 40 new characters from the vocabulary, then print's newline
        assert sample.startswith('abc') and len(sample) == 3 + 40 + 1 and set(sample) <= set('\n abcdefgh')
    assert proc.stderr.count('(2 x 40 new tokens in') == 1  # both samples in one batch


def test_sample_errors(tmp_path):
    out_dir = write_char_checkpoint(tmp_path)
    proc = run_script('sample.py', f'--out_dir={tmp_path / "missing"}', '--device=cpu', check=False)
    assert proc.returncode != 0 and 'no checkpoint at' in proc.stderr
    proc = run_script('sample.py', f'--out_dir={out_dir}', '--start=xyz', '--device=cpu', check=False)
    assert proc.returncode != 0 and "outside the model's vocabulary" in proc.stderr and "'xyz'" in proc.stderr
    assert 'the prompt (--start=xyz) has characters' in proc.stderr and 'leave them out' in proc.stderr
    proc = run_script('sample.py', f'--out_dir={out_dir}', f'--start=FILE:{tmp_path / "nope.txt"}', '--device=cpu',
                      check=False)
    assert proc.returncode != 0 and 'prompt file' in proc.stderr and 'not found' in proc.stderr
    proc = run_script('sample.py', '--init_fro=gpt2', check=False)
    assert proc.returncode != 0 and "did you mean 'init_from'" in proc.stderr


def test_sample_from_hf_directory(hf_gpt2_dir, gpt2_tokenizer):
    proc = run_script('sample.py', f'--init_from={hf_gpt2_dir}', '--start=Hello, my name is', '--num_samples=1',
                      '--max_new_tokens=10', '--device=cpu', '--temperature=0.0')
    # greedy: exactly the continuation the model gives in-process
    model = GPT.from_pretrained(hf_gpt2_dir).eval()
    ids = gpt2_tokenizer.encode('Hello, my name is')
    out = model.generate(torch.tensor([ids]), 10, temperature=0.0)[0].tolist()
    assert f"\n{gpt2_tokenizer.decode(out)}\n---------------\n" in proc.stdout, proc.stdout


def test_long_prompt_is_cropped_to_the_context(tmp_path):
    # nanoGPT's behaviour: the model conditions on the last block_size tokens of a longer prompt
    out_dir = write_char_checkpoint(tmp_path)
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('hgfedcba abc' * 2)  # 24 characters, block_size is 16

    def continuation(start: str) -> str:
        proc = run_script('sample.py', f'--out_dir={out_dir}', f'--start={start}', '--device=cpu', '--num_samples=1',
                          '--max_new_tokens=12', '--temperature=0.0')
        sample = after_meta(proc.stdout).split('---------------\n')[0]
        return proc, sample[:-1]  # less print's newline

    proc, whole = continuation(f'FILE:{prompt}')
    assert 'the prompt is 24 tokens long' in proc.stderr and 'conditions on the last 16' in proc.stderr
    assert whole.startswith(prompt.read_text()) and len(whole) == 24 + 12
    # a prompt far beyond any context is read from its end only (a 500 MB prompt ran out of memory)
    (tmp_path / 'huge.txt').write_text('a' * 100_000 + prompt.read_text())
    proc, huge = continuation(f'FILE:{tmp_path / "huge.txt"}')
    assert 'the prompt is 100,024 characters long: only its last 2,048 are read' in proc.stderr
    assert huge.endswith(whole[-24 - 12:])
    _, last = continuation(prompt.read_text()[-16:])
    assert whole[24:] == last[16:]  # the same greedy continuation as from the last 16 characters alone
    _, first = continuation(prompt.read_text()[:16])
    assert whole[24:] != first[16:]  # and not the one the first 16 would give
