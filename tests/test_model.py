"""
model.py against Hugging Face transformers on a tiny random GPT-2 (logits within 1e-5, identical greedy
continuations), the attention paths and the KV cache equal, GPT-2 124M's parameter count, from_pretrained's errors,
MFU on the GPU's own peak, and the loss in float32 under bfloat16 weights.
"""
import math

import pytest
import torch

from model import GPT, CausalSelfAttention, GPTConfig, KVCache, sample_next


def tiny_config(**kw):
    args = dict(block_size=32, vocab_size=97, n_layer=2, n_head=4, n_embd=32, dropout=0.0, bias=True)
    args.update(kw)
    return GPTConfig(**args)


def full_logits(model, idx):
    """Logits at every position (passing targets makes forward return them all)."""
    logits, _ = model(idx, targets=idx)
    return logits


# -----------------------------------------------------------------------------
# parity with Hugging Face transformers

def test_logits_match_transformers(hf_gpt2_dir):
    transformers = pytest.importorskip('transformers')
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir).eval()
    model = GPT.from_pretrained(hf_gpt2_dir).eval()
    assert model.config.vocab_size == 50257 and model.config.block_size == 128
    idx = torch.randint(0, 50257, (3, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx).logits
        ours = full_logits(model, idx)
        last, _ = model(idx)
    assert (ours - ref).abs().max().item() <= 1e-5
    assert torch.allclose(last[:, 0], ref[:, -1], atol=1e-5, rtol=0)


def test_greedy_continuation_matches_transformers(hf_gpt2_dir):
    transformers = pytest.importorskip('transformers')
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir).eval()
    model = GPT.from_pretrained(hf_gpt2_dir).eval()
    prompt = torch.randint(0, 50257, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, do_sample=False,
                          pad_token_id=0)
    ours = model.generate(prompt, 30, temperature=0.0)
    assert torch.equal(ours, ref)


def test_from_pretrained_reads_pytorch_bin_and_unprefixed_keys(hf_gpt2_dir, tmp_path):
    # pytorch_model.bin of a GPT2Model (keys without 'transformer.'), as older hub checkpoints are
    import json
    import shutil

    from safetensors.torch import load_file
    sd = load_file(f"{hf_gpt2_dir}/model.safetensors")
    sd = {k.removeprefix('transformer.'): v for k, v in sd.items() if not k.startswith('lm_head')}
    torch.save(sd, tmp_path / 'pytorch_model.bin')
    shutil.copy(f"{hf_gpt2_dir}/config.json", tmp_path / 'config.json')
    a = GPT.from_pretrained(hf_gpt2_dir)
    b = GPT.from_pretrained(str(tmp_path))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # a config this model cannot reproduce is refused
    cfg = json.load(open(tmp_path / 'config.json'))
    cfg['activation_function'] = 'relu'
    json.dump(cfg, open(tmp_path / 'config.json', 'w'))
    with pytest.raises(ValueError, match='activation_function'):
        GPT.from_pretrained(str(tmp_path))


def test_from_pretrained_errors(hf_gpt2_dir, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match='only dropout'):
        GPT.from_pretrained(hf_gpt2_dir, dict(n_layer=3))
    assert GPT.from_pretrained(hf_gpt2_dir, dict(dropout=0.1)).config.dropout == 0.1
    with pytest.raises(ValueError, match='unknown pretrained model'):
        GPT.from_pretrained('gpt3')
    with pytest.raises(FileNotFoundError, match='config.json'):
        GPT.from_pretrained(str(tmp_path))

    # a download that fails says so and points at local directories
    import huggingface_hub
    import huggingface_hub.utils
    downloads = []

    def offline(*args, **kwargs):
        downloads.append(kwargs.get('local_files_only', False))
        raise OSError("network is unreachable")

    class Reachable:
        def head(self, url, timeout):
            return None

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', offline)
    monkeypatch.setattr(huggingface_hub.utils, 'get_session', lambda: Reachable())
    with pytest.raises(RuntimeError, match='could not download gpt2 from the Hugging Face hub.*local directory'):
        GPT.from_pretrained('gpt2')
    assert downloads == [True, False]  # the local cache first, then the hub

    # offline: one request says so at once, before the client's retries would begin
    class Unreachable:
        def head(self, url, timeout):
            raise ConnectionError('Name or service not known')

    downloads.clear()
    monkeypatch.setattr(huggingface_hub.utils, 'get_session', lambda: Unreachable())
    with pytest.raises(RuntimeError, match=r'could not download gpt2 .*cannot reach https?://\S+: Name or service'):
        GPT.from_pretrained('gpt2')
    assert downloads == [True]  # the cache looked in, no download tried


# -----------------------------------------------------------------------------
# the model itself

def test_sdpa_and_masked_attention_agree():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        flash = full_logits(model, idx)
        for m in model.modules():
            if isinstance(m, CausalSelfAttention):
                m.flash = False
        masked = full_logits(model, idx)
    assert torch.allclose(flash, masked, atol=1e-5, rtol=0)


def test_causality():
    # changing a later token never changes an earlier position's logits
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 97, (1, 20))
    idx2 = idx.clone()
    idx2[0, 12] = (idx[0, 12] + 1) % 97
    with torch.no_grad():
        a, b = full_logits(model, idx), full_logits(model, idx2)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-3)


def test_kv_cache_generation_equals_uncached():
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(0, 97, (3, 5))
    # 60 new tokens run well past block_size=32, so the cropping path is exercised too
    cached = model.generate(prompt, 60, temperature=0.0)
    uncached = model.generate(prompt, 60, temperature=0.0, use_kv_cache=False)
    assert cached.shape == (3, 65)
    assert torch.equal(cached, uncached)
    # sampling draws the same tokens for the same seed
    torch.manual_seed(3)
    a = model.generate(prompt, 40, temperature=1.0, top_k=20)
    torch.manual_seed(3)
    b = model.generate(prompt, 40, temperature=1.0, top_k=20, use_kv_cache=False)
    assert torch.equal(a, b)


def test_kv_cache_chunks_equal_one_forward():
    # feeding a sequence through the cache in pieces gives the logits of one full forward
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 97, (2, 24))
    cache = KVCache(model.config)
    with torch.no_grad():
        full = full_logits(model, idx)
        for a, b in [(0, 10), (10, 11), (11, 24)]:
            logits, _ = model(idx[:, a:b], kv_cache=cache)
            assert torch.allclose(logits[:, -1], full[:, b - 1], atol=1e-5)
    assert cache.pos == 24


def test_sequence_longer_than_block_size_is_an_error():
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match='block_size is 32'):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_loss_and_inference_shapes():
    model = GPT(tiny_config())
    idx = torch.randint(0, 97, (4, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (4, 16, 97)
    assert abs(loss.item() - math.log(97)) < 0.5  # near-uniform predictions at init
    logits, loss = model(idx)
    assert logits.shape == (4, 1, 97) and loss is None
    # ignore_index=-1 masks targets out of the loss
    targets = idx.clone()
    targets[:, 8:] = -1
    _, masked_loss = model(idx, targets)
    full = full_logits(model, idx)
    expect = torch.nn.functional.cross_entropy(full[:, :8].reshape(-1, 97), idx[:, :8].reshape(-1))
    assert torch.allclose(masked_loss, expect, atol=1e-6)


def test_loss_is_float32_with_bfloat16_weights():
    # FSDP's mixed precision computes in bfloat16 weights without autocast: the cross-entropy must still be float32
    model = GPT(tiny_config())
    idx = torch.randint(0, 97, (4, 16))
    _, loss32 = model(idx, idx)
    logits, loss = model.to(torch.bfloat16)(idx, idx)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    expect = torch.nn.functional.cross_entropy(logits.float().view(-1, 97), idx.view(-1))
    assert loss.item() == pytest.approx(expect.item(), abs=1e-6) and loss.item() == pytest.approx(loss32.item(), abs=0.02)
    _, loss64 = model.to(torch.float64)(idx, idx)
    assert loss64.dtype == torch.float64  # and never narrowed


def test_weight_tying_and_gpt2_param_count():
    model = GPT(GPTConfig(vocab_size=50257))
    assert model.transformer.wte.weight is model.lm_head.weight
    assert model.get_num_params(non_embedding=False) == 124_439_808
    assert model.get_num_params() == 123_653_376  # 123.65M
    # nanoGPT's state_dict keys
    keys = set(model.state_dict())
    assert {'transformer.wte.weight', 'transformer.wpe.weight', 'transformer.h.0.attn.c_attn.weight',
            'transformer.h.11.mlp.c_proj.bias', 'transformer.ln_f.weight', 'lm_head.weight'} <= keys
    assert not any(k.endswith('.attn.bias') for k in keys)  # no causal-mask buffers


def test_init_is_gpt2_and_reproducible():
    cfg = tiny_config(n_layer=4, n_embd=64, vocab_size=1000)
    a, b, c = GPT(cfg, seed=1), GPT(cfg, seed=1), GPT(cfg, seed=2)
    torch.manual_seed(123)  # the global RNG plays no part
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert abs(a.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
    assert abs(a.transformer.h[0].mlp.c_proj.weight.std().item() - 0.02 / math.sqrt(8)) < 0.001
    assert torch.all(a.transformer.h[0].attn.c_attn.bias == 0)
    assert torch.all(a.transformer.ln_f.weight == 1)


def test_no_bias_model():
    model = GPT(tiny_config(bias=False))
    assert not any(n.endswith('.bias') for n, _ in model.named_parameters())
    _, loss = model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.get_num_params() < GPT(tiny_config(bias=True)).get_num_params()


def test_crop_block_size():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 97, (1, 16))
    before = full_logits(model, idx)
    model.crop_block_size(16)
    assert model.config.block_size == 16 and model.transformer.wpe.weight.shape == (16, 32)
    assert torch.allclose(full_logits(model, idx), before)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match='grow'):
        model.crop_block_size(64)


def test_configure_optimizers_decays_only_matrices():
    model = GPT(tiny_config())
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cpu')
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() >= 2 for p in decay['params']) and all(p.dim() < 2 for p in no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))


def test_estimate_mfu_uses_device_peak(monkeypatch):
    from nanogpt import runtime
    model = GPT(tiny_config())
    assert model.estimate_mfu(1, 0.1, runtime.device_peak_flops('cpu')) is None  # CPU: no known peak
    mfu = model.estimate_mfu(4, 0.5, flops_promised=1e12)
    cfg = model.config
    flops = (6 * model.get_num_params() + 12 * cfg.n_layer * cfg.n_head * 8 * 32) * 32 * 4
    assert mfu == pytest.approx(flops / 0.5 / 1e12)
    # the peak comes from the GPU actually in use
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'NVIDIA H100 80GB HBM3')
    assert model.estimate_mfu(4, 0.5, runtime.device_peak_flops('cuda:0')) == pytest.approx(flops / 0.5 / 989e12)


@pytest.mark.parametrize('name, flops', [
    ('NVIDIA H100 80GB HBM3', 989e12), ('NVIDIA H100 PCIe', 756e12), ('NVIDIA A100-SXM4-80GB', 312e12),
    ('NVIDIA L40S', 362e12), ('NVIDIA L4', 121e12), ('NVIDIA GeForce RTX 4090', 165e12), ('Some Future GPU', None),
])
def test_peak_flops_reads_the_device_name(monkeypatch, name, flops):
    # the GPU's name as torch reports it picks the entry; a name that contains a shorter one (H100 PCIe) wins
    from nanogpt import runtime
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: name)
    assert runtime.device_peak_flops('cuda:0') == flops
    assert runtime.device_peak_flops('cpu') is None


def test_sample_next_top_k_top_p():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    torch.manual_seed(0)
    draws = torch.cat([sample_next(logits, 1.0, top_k=2) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}
    probs = torch.softmax(logits, -1)[0]  # 0.64, 0.24, 0.09, ...
    draws = torch.cat([sample_next(logits, 1.0, top_p=0.8) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}
    assert probs[0] < 0.8 < probs[0] + probs[1]
    draws = torch.cat([sample_next(logits, 1.0, top_p=0.5) for _ in range(50)])
    assert set(draws.flatten().tolist()) == {0}
    assert sample_next(logits, 0.0).item() == 0
    # a top_p of almost nothing keeps the most likely token, whatever rounding does to the mass before it
    flat = torch.full((3, 50257), 0.1)
    flat[:, 7] = 0.2
    assert sample_next(flat, 1.0, top_p=1e-300).flatten().tolist() == [7, 7, 7]
    # the same logits in another order, two rows: the kept tokens are found where they are, not where sorting put them
    order = torch.tensor([[3, 0, 4, 1, 2], [2, 4, 1, 3, 0]])
    shuffled = logits[0][order]  # row r, column c holds logits[order[r, c]]
    draws = torch.cat([sample_next(shuffled, 1.0, top_p=0.8) for _ in range(200)], dim=1)
    for row in range(2):
        kept = {int((order[row] == i).nonzero()) for i in (0, 1)}  # where the two most likely tokens went
        assert set(draws[row].tolist()) == kept, (row, kept)


@pytest.mark.parametrize('temperature', [1e-300, 1e-40, 1e-6])
def test_a_temperature_near_zero_samples_the_most_likely_token(temperature):
    # logits / temperature overflowed (inf - inf is NaN: multinomial refused the probabilities)
    logits = torch.tensor([[30.0, 29.0, -5.0], [-1.0, 2.0, 1.9]])
    assert sample_next(logits, temperature).flatten().tolist() == [0, 1]


@pytest.mark.skipif(not hasattr(torch.nn, 'LinearCrossEntropyOptions'), reason='F.linear_cross_entropy needs torch >= 2.13')
def test_chunked_loss_equals_the_plain_loss_and_gradients():
    # GPT-2-like proportions: vocab much wider than n_embd, more positions than n_embd (where chunking applies)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=1000, dropout=0.0))
    idx, targets = torch.randint(1000, (4, 64)), torch.randint(1000, (4, 64))
    targets[0, :7] = -1  # ignored positions, as in padded batches

    def loss_and_grads(chunked: bool):
        model.zero_grad()
        model.chunked_loss = chunked
        logits, loss = model(idx, targets)
        loss.backward()
        return logits, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    logits, plain, plain_grads = loss_and_grads(False)
    no_logits, chunked, chunked_grads = loss_and_grads(True)
    assert no_logits is None and logits.shape == (4, 64, 1000)
    # float32 sums of a few thousand terms, reduced in an order that depends on the thread count: a few ulps apart,
    # where a chunk left out or counted twice is off by far more (a 1-in-256 share of the loss is 4e-3)
    assert torch.allclose(chunked, plain, rtol=1e-5, atol=0)
    for name, g in plain_grads.items():
        err = (chunked_grads[name] - g).abs().max() / g.abs().max()
        assert err <= 1e-5, (name, err.item())
    # generation is untouched: no targets, the last position's logits
    model.eval()
    assert model(idx[:, :5])[0].shape == (4, 1, 1000)
