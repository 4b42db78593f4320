"""
Evaluation and export: HellaSwag scores equal a direct computation, HellaSwag inside training (also under FSDP with
an uneven split, and on its own interval), its errors; export to Hugging Face format round-trips through
transformers; perplexity on a text and a split; every config file parses.
"""
import json
import math
import os
import re

import numpy as np
import pytest
import torch
from conftest import REPO, bpe_data, eval_losses, one_line_error, read_log, run_ranks, run_script, train
from torch.nn import functional as F

from configurator import configure
from model import GPT, GPTConfig

WORDS = ['the man', 'a dog', 'runs to', 'the store', 'and buys', 'bread', 'then sits', 'on a bench', 'quietly',
         'while it rains', 'outside the', 'old house']


def write_records(path, n=12, seed=0):
    """HellaSwag-format records (the fields of hellaswag_val.jsonl)."""
    rng = np.random.default_rng(seed)
    with open(path, 'w') as f:
        for i in range(n):
            ctx = ' '.join(rng.choice(WORDS, 6)).capitalize() + '. He'
            endings = [' '.join(rng.choice(WORDS, rng.integers(2, 6))) + '.' for _ in range(4)]
            f.write(json.dumps({'ind': i, 'activity_label': 'Shopping', 'ctx_a': ctx[:-3], 'ctx_b': 'he',
                                'ctx': ctx, 'endings': endings, 'source_id': f'synthetic~{i}', 'split': 'val',
                                'split_type': 'indomain', 'label': int(rng.integers(0, 4))}) + '\n')
    return [json.loads(line) for line in open(path)]


def direct_losses(hf, enc, example):
    """Ending-token cross-entropies computed with transformers, one ending at a time."""
    ctx = enc.encode(example['ctx'])
    sums, means = [], []
    for ending in example['endings']:
        end = enc.encode(' ' + ending)
        ids = torch.tensor([ctx + end])
        with torch.no_grad():
            logits = hf(ids).logits[0]
        losses = F.cross_entropy(logits[len(ctx) - 1:-1], torch.tensor(end), reduction='none')
        sums.append(losses.sum().item())
        means.append(losses.mean().item())
    return sums, means


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    path = tmp_path_factory.mktemp('hellaswag') / 'hellaswag_val.jsonl'
    return str(path), write_records(path)


def test_hellaswag_scores_equal_direct_computation(hf_gpt2_dir, gpt2_tokenizer, records):
    transformers = pytest.importorskip('transformers')
    from hellaswag import evaluate_hellaswag, load_examples, render_example, score_example
    from nanogpt.runtime import setup_runtime
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir).eval()
    model = GPT.from_pretrained(hf_gpt2_dir).eval()
    path, examples = records
    assert load_examples(path) == examples and len(load_examples(path, limit=5)) == 5
    correct_norm = correct = 0
    for example in examples:
        tokens, mask, label = render_example(example, gpt2_tokenizer, model.config.block_size + 1)
        sum_loss, mean_loss = score_example(model, tokens, mask)
        sums, means = direct_losses(hf, gpt2_tokenizer, example)
        assert torch.allclose(sum_loss, torch.tensor(sums), atol=1e-4)
        assert torch.allclose(mean_loss, torch.tensor(means), atol=1e-5)
        correct_norm += int(np.argmin(means) == label)
        correct += int(np.argmin(sums) == label)
    result = evaluate_hellaswag(model, examples, setup_runtime('cpu', 'float32'), progress=False)
    assert result == {'acc_norm': correct_norm / 12, 'acc': correct / 12, 'n': 12}
    # the script prints the same, alone and split over two DDP ranks
    proc = run_script('hellaswag.py', f'--init_from={hf_gpt2_dir}', f'--data_file={path}', '--device=cpu')
    line = f"12 examples, acc_norm {correct_norm / 12:.4f}, acc {correct / 12:.4f}"
    assert line in proc.stdout, proc.stdout
    proc = run_ranks('hellaswag.py', f'--init_from={hf_gpt2_dir}', f'--data_file={path}', '--device=cpu')
    assert line in proc.stdout and proc.stdout.count('acc_norm') == 1  # rank 0 prints the reduced counts


def train_with_hellaswag(tmp_path, records, *args, nproc=0):
    """A tiny GPT-2 BPE model trained on random tokens, with HellaSwag on records[0] every hellaswag_interval; under
    torchrun with nproc processes if nproc."""
    bpe_data(tmp_path)
    args = ['train.py', '--device=cpu', '--compile=False', '--n_layer=1', '--n_head=2', '--n_embd=16',
            '--block_size=64', '--batch_size=2', f'--gradient_accumulation_steps={max(nproc, 1)}', '--eval_iters=1',
            f'--dataset={tmp_path}', f'--out_dir={tmp_path / "out"}', f'--hellaswag_file={records[0]}', *args]
    if not nproc:
        return run_script(*args)
    return run_ranks(*args, nproc=nproc, timeout=300)


def hellaswag_records(tmp_path) -> list[dict]:
    return [r for r in read_log(tmp_path / 'out') if 'hellaswag' in r]


def test_hellaswag_inside_training(tmp_path, records, gpt2_tokenizer):
    proc = train_with_hellaswag(tmp_path, records, '--max_iters=2', '--eval_interval=1', '--hellaswag_interval=2',
                                '--hellaswag_limit=8')
    found = hellaswag_records(tmp_path)
    assert 'hellaswag acc_norm' in proc.stdout
    assert [r['iter'] for r in found] == [0, 2]  # every hellaswag_interval, and at the end
    assert all(r[k] * 8 == int(r[k] * 8) for r in found for k in ('hellaswag', 'hellaswag_acc'))  # fractions of 8


@pytest.mark.slow
def test_hellaswag_inside_fsdp_training(tmp_path, records, gpt2_tokenizer):
    # 5 examples on 2 ranks: 3 and 2, yet a sharded model's forward needs every rank, so both run 3 passes
    train_with_hellaswag(tmp_path, records, '--max_iters=1', '--hellaswag_interval=1', '--hellaswag_limit=5',
                         '--data_parallel=fsdp', nproc=2)
    found = hellaswag_records(tmp_path)
    assert [r['iter'] for r in found] == [0, 1]
    assert all(r['hellaswag'] * 5 == pytest.approx(round(r['hellaswag'] * 5)) for r in found)  # a fraction of 5


def test_hellaswag_runs_on_its_own_interval(tmp_path, records, gpt2_tokenizer):
    # every hellaswag_interval iterations whether or not an evaluation of the loss falls there, and at the end
    train_with_hellaswag(tmp_path, records, '--max_iters=5', '--eval_interval=4', '--hellaswag_interval=2',
                         '--hellaswag_limit=4')
    assert [r['iter'] for r in hellaswag_records(tmp_path)] == [0, 2, 4, 5]
    assert sorted(eval_losses(tmp_path / 'out', 'train_loss')) == [0, 4, 5]


def test_hellaswag_during_training_on_character_data_is_refused_before_any_download(tmp_path, char_data):
    # a proxy that refuses every connection: were the file downloaded first, this would fail on that instead
    offline = {'https_proxy': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9', 'no_proxy': '', 'NO_PROXY': ''}
    proc = train(char_data, tmp_path / 'out', '--max_iters=1', '--hellaswag_interval=5', env=offline, check=False)
    one_line_error(proc, 'hellaswag_interval=5 needs a GPT-2 BPE model', 'set --hellaswag_interval=0')


def test_hellaswag_errors(tmp_path, records):
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"ctx": "x", "endings": ["a", "b"], "label": 0}\n')
    proc = run_script('hellaswag.py', '--init_from=gpt2', f'--data_file={bad}', '--device=cpu', check=False)
    assert proc.returncode != 0 and "bad.jsonl:1: 'endings' holds ['a', 'b'], where it must be a list of 4" in proc.stderr
    # a proxy that refuses every connection: the download fails here whether or not this machine is online
    offline = {'https_proxy': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9', 'no_proxy': '', 'NO_PROXY': ''}
    proc = run_script('hellaswag.py', '--init_from=gpt2', f'--cache_dir={tmp_path / "cache"}', '--device=cpu',
                      env=offline, check=False)
    assert proc.returncode != 0 and 'could not download' in proc.stderr, proc.stderr[-2000:]
    assert '--data_file=PATH' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'cache').exists()  # no partial download left behind, nor the folder made for it


# -----------------------------------------------------------------------------
# export to Hugging Face format

def write_checkpoint(out_dir, vocab_size=50304, bias=False, **extra_args):
    model_args = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, bias=bias, vocab_size=vocab_size, dropout=0.0)
    model = GPT(GPTConfig(**model_args), seed=3)
    with torch.no_grad():  # non-trivial LayerNorm weights and biases, so a mix-up would show
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    os.makedirs(out_dir, exist_ok=True)
    torch.save({'model': model.state_dict(), 'model_args': {**model_args, **extra_args}, 'iter_num': 1,
                'best_val_loss': 5.0, 'config': {'dataset': 'openwebtext'}}, os.path.join(out_dir, 'ckpt.pt'))
    return model.eval()


@pytest.mark.parametrize('bias,trim', [(False, False), (True, True)])
def test_export_round_trip(tmp_path, bias, trim):
    transformers = pytest.importorskip('transformers')
    model = write_checkpoint(tmp_path / 'out', bias=bias)
    dest = tmp_path / 'hf'
    run_script('export_hf.py', f'--out_dir={tmp_path / "out"}', f'--dest={dest}', f'--trim_vocab={trim}')
    assert {'config.json', 'model.safetensors'} <= set(os.listdir(dest))
    hf = transformers.GPT2LMHeadModel.from_pretrained(dest).eval()
    assert hf.config.vocab_size == (50257 if trim else 50304)
    idx = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(idx, idx)[0]
        theirs = hf(idx).logits
    n = theirs.size(-1)
    assert (ours[..., :n] - theirs).abs().max().item() <= 1e-5
    # and back through from_pretrained
    back = GPT.from_pretrained(str(dest)).eval()
    with torch.no_grad():
        assert (back(idx, idx)[0] - theirs).abs().max().item() <= 1e-5


def test_export_writes_the_tokenizer(tmp_path, gpt2_tokenizer):
    transformers = pytest.importorskip('transformers')
    write_checkpoint(tmp_path / 'out')
    run_script('export_hf.py', f'--out_dir={tmp_path / "out"}', f'--dest={tmp_path / "hf"}')
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
    text = 'Hello world, this is GPT-2.'
    assert tok(text)['input_ids'] == gpt2_tokenizer.encode(text)


def test_export_errors(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'ckpt.pt').write_bytes(b'not a checkpoint at all')
    proc = run_script('export_hf.py', f'--out_dir={out}', f'--dest={tmp_path / "hf"}', check=False)
    assert proc.returncode != 0 and 'damaged or not a PyTorch checkpoint' in proc.stderr
    write_checkpoint(out, n_kv_head=2)
    proc = run_script('export_hf.py', f'--out_dir={out}', f'--dest={tmp_path / "hf"}', check=False)
    assert proc.returncode != 0 and 'another architecture' in proc.stderr and "'n_kv_head'" in proc.stderr
    write_checkpoint(out, vocab_size=100)
    proc = run_script('export_hf.py', f'--out_dir={out}', f'--dest={tmp_path / "hf"}', '--trim_vocab=True',
                      check=False)
    assert proc.returncode != 0 and 'only 100' in proc.stderr
    assert not (tmp_path / 'hf' / 'model.safetensors').exists()


@pytest.mark.parametrize('script, args', [('export_hf.py', ['--dest=x']), ('sample.py', []),
                                          ('perplexity.py', ['--text_file=x'])])
def test_a_missing_checkpoints_advice_names_keys_its_script_takes(tmp_path, script, args):
    import importlib
    proc = run_script(script, f'--out_dir={tmp_path / "typo"}', *args, check=False)
    line = proc.stderr.strip()
    assert proc.returncode == 1 and line.startswith('error: no checkpoint at') and '\n' not in line, proc.stderr
    keys = set(re.findall(r'--(\w+)', line))
    assert keys <= set(importlib.import_module(script[:-3]).defaults), (keys, line)
    assert ('init_from' in keys) == (script != 'export_hf.py')  # OpenAI's weights, where the script can take them


# -----------------------------------------------------------------------------
# perplexity, configs

def test_perplexity_on_text_and_split(tmp_path, char_data):
    run_script('train.py', '--device=cpu', '--compile=False', '--n_layer=1', '--n_head=2', '--n_embd=16',
               '--block_size=16', '--batch_size=4', '--gradient_accumulation_steps=1', '--max_iters=2',
               '--eval_interval=2', '--eval_iters=1', f'--dataset={char_data}', f'--out_dir={tmp_path}')
    text = 'to be or not to be that is the question\n'
    (tmp_path / 'text.txt').write_text(text)
    proc = run_script('perplexity.py', f'--out_dir={tmp_path}', f'--text_file={tmp_path / "text.txt"}',
                      '--device=cpu', '--batch_size=2')
    m = re.search(r'([\d,]+) tokens, loss ([\d.]+), perplexity ([\d.]+)', proc.stdout)
    assert m and int(m.group(1).replace(',', '')) == len(text) - 1  # every character but the first, once
    # the same figure computed directly: windows of 16 + 1 characters, each window from scratch
    from nanogpt.checkpoint import load_checkpoint, model_from_checkpoint
    from nanogpt.tokenizer import get_tokenizer
    ckpt = load_checkpoint(str(tmp_path / 'ckpt.pt'))
    model = model_from_checkpoint(ckpt).eval()
    ids = get_tokenizer(ckpt)[0](text)
    losses = []
    for s in range(0, len(ids) - 1, 16):
        w = torch.tensor([ids[s:s + 17]])
        with torch.no_grad():
            logits, _ = model(w[:, :-1], w[:, 1:])
        losses += F.cross_entropy(logits[0], w[0, 1:], reduction='none').tolist()
    assert float(m.group(2)) == pytest.approx(np.mean(losses), abs=1e-4)
    assert float(m.group(3)) == pytest.approx(math.exp(np.mean(losses)), rel=1e-3)
    proc = run_script('perplexity.py', f'--out_dir={tmp_path}', f'--dataset={char_data}', '--split=val',
                      '--device=cpu', '--max_tokens=500')
    assert '499 tokens' in proc.stdout
    # a split that no prepare writes is named as such, not sent to run a prepare script
    proc = run_script('perplexity.py', f'--out_dir={tmp_path}', f'--dataset={char_data}', '--split=valid', check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: split='valid': use 'train' or 'val'"


def test_every_config_parses():
    import train
    for name in sorted(os.listdir(os.path.join(REPO, 'config'))):
        cfg = configure(train.defaults, [os.path.join(REPO, 'config', name)], verbose=False)
        if name.startswith('eval_gpt2'):
            assert cfg.eval_only and cfg.init_from.startswith('gpt2')
    cfg = configure(train.defaults, [os.path.join(REPO, 'config', 'train_gpt2_fineweb_edu.py')], verbose=False)
    assert cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps == 524_288
    assert (cfg.max_iters, cfg.warmup_iters, cfg.learning_rate) == (19073, 715, 6e-4)
