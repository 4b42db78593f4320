"""
Full definition of a GPT Language Model, all of it in this single file.
References:
1) the official GPT-2 TensorFlow implementation released by OpenAI:
https://github.com/openai/gpt-2/blob/master/src/model.py
2) huggingface/transformers PyTorch implementation:
https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py

Module and parameter names follow GPT-2's (wte, wpe, h, ln_f, c_attn, c_proj, c_fc, lm_head) so that
checkpoints keep nanoGPT's state_dict keys and OpenAI's weights load with only the Conv1D transposes.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for efficiency
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # True: bias in Linears and LayerNorms, like GPT-2. False: a bit better and faster


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's only became optional in 2.1). eps is GPT-2's 1e-5."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """Keys and values of the positions seen so far, for every layer, in buffers of block_size positions."""

    def __init__(self, config: GPTConfig):
        self.config = config
        self.kv = None  # (n_layer, 2, B, nh, block_size, hs), allocated on first use with the activations' dtype
        self.pos = 0  # number of positions already cached

    def update(self, layer: int, k, v):
        """Store the new k, v (B, nh, T, hs) at self.pos and return all keys and values up to them."""
        B, nh, T, hs = k.shape
        if self.kv is None:
            shape = (self.config.n_layer, 2, B, nh, self.config.block_size, hs)
            self.kv = torch.empty(shape, dtype=k.dtype, device=k.device)
        end = self.pos + T
        self.kv[layer, 0, :, :, self.pos:end] = k
        self.kv[layer, 1, :, :, self.pos:end] = v
        return self.kv[layer, 0, :, :, :end], self.kv[layer, 1, :, :, :end]


class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.layer_idx = layer_idx
        # key, query, value projections for all heads, but in a batch
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # flash attention through scaled_dot_product_attention; False selects the explicit masked softmax, which
        # computes the same thing (the tests compare the two)
        self.flash = True

    def forward(self, x, kv_cache: KVCache | None = None):
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, past + T, hs)
        # causal mask: query i sits at position past + i and may look at keys 0 .. past + i. Without a cache it is
        # the plain causal one, which SDPA's is_causal expresses (and its flash kernel needs), so none is built
        mask = None
        if past or not self.flash:
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)  # (T, past + T)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, past + T)
            att = att.masked_fill(~mask, float('-inf'))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, past + T) x (B, nh, past + T, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate='tanh')  # GPT-2's gelu_new; the exact GELU does not reproduce its logits
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache: KVCache | None = None):
        x = x + self.attn(self.ln_1(x), kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config: GPTConfig, seed: int = 1337):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying, as in GPT-2: the token embedding is the output projection
        self.transformer.wte.weight = self.lm_head.weight
        self.chunked_loss = False  # see forward; train.py's chunked_loss sets it

        # GPT-2 init from an explicit generator, so the weights depend on the seed alone
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith('c_proj.weight'):  # residual projections, scaled down per GPT-2 paper
                    p.normal_(0.0, 0.02 / math.sqrt(2 * config.n_layer), generator=generator)
                elif p.dim() >= 2:  # Linear weights and embeddings
                    p.normal_(0.0, 0.02, generator=generator)
                elif name.endswith('.bias'):
                    p.zero_()
                else:  # LayerNorm weights
                    p.fill_(1.0)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """
        Return the number of parameters in the model.
        For non-embedding count (default), the position embeddings get subtracted.
        The token embeddings would too, except due to the parameter sharing these
        params are actually used as weights in the final layer, so we include them.
        """
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def forward(self, idx, targets=None, kv_cache: KVCache | None = None):
        b, t = idx.size()
        past = kv_cache.pos if kv_cache is not None else 0
        if past + t > self.config.block_size:
            raise ValueError(f"cannot forward a sequence of length {past + t}: the model's block_size is "
                             f"{self.config.block_size}; crop the input to its last {self.config.block_size} tokens")
        pos = torch.arange(past, past + t, dtype=torch.long, device=idx.device)  # shape (t)

        # forward the GPT model itself
        tok_emb = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # position embeddings of shape (t, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x, kv_cache)
        x = self.transformer.ln_f(x)
        if kv_cache is not None:
            kv_cache.pos += t

        if targets is not None and self.chunked_loss:
            # lm_head and cross-entropy in chunks of positions: the (B*T, vocab_size) logits, the largest activation
            # of GPT-2 training, are never materialised (torch >= 2.13); no logits are returned
            logits = None
            loss = F.linear_cross_entropy(x.view(-1, x.size(-1)), self.lm_head.weight, targets.view(-1),
                                          ignore_index=-1, options=nn.LinearCrossEntropyOptions())
        elif targets is not None:
            # if we are given some desired targets also calculate the loss
            logits = self.lm_head(x)
            # the loss in float32 at least, even where the logits are bfloat16 (FSDP's mixed precision; autocast
            # does this by itself)
            wide = torch.promote_types(logits.dtype, torch.float32)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).to(wide), targets.view(-1), ignore_index=-1)
        else:
            # inference-time mini-optimization: only forward the lm_head on the very last position
            logits = self.lm_head(x[:, [-1], :])  # note: using list [-1] to preserve the time dim
            loss = None

        return logits, loss

    def crop_block_size(self, block_size: int):
        # model surgery to decrease the block size if necessary
        # e.g. we may load the GPT2 pretrained model checkpoint (block size 1024)
        # but want to use a smaller block size for some smaller, simpler model
        if block_size > self.config.block_size:
            raise ValueError(f"cannot grow block_size from {self.config.block_size} to {block_size}")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    @classmethod
    def from_pretrained(cls, name_or_path: str, override_args: dict | None = None) -> 'GPT':
        """OpenAI's GPT-2 (gpt2, gpt2-medium, gpt2-large, gpt2-xl) from the Hugging Face hub, or a local
        directory holding a Hugging Face GPT-2 checkpoint (config.json and model.safetensors or pytorch_model.bin)."""
        from nanogpt.weights import read_pretrained  # the file format, only needed here
        override_args = override_args or {}
        if set(override_args) - {'dropout'}:
            raise ValueError(f"only dropout can be overridden in a pretrained model, not {sorted(override_args)}")
        # config and weights as this model names and lays them out (the Conv1D weights already transposed)
        config_args, state_dict = read_pretrained(name_or_path)
        config_args.update(override_args)
        model = cls(GPTConfig(bias=True, **config_args))
        sd = model.state_dict()
        expected = [k for k in sd if k != 'lm_head.weight']  # tied to transformer.wte.weight
        missing = [k for k in expected if k not in state_dict]
        if missing:
            raise ValueError(f"{name_or_path} is not a GPT-2 checkpoint: it lacks {missing[:3]}"
                             f"{' and more' if len(missing) > 3 else ''}")
        with torch.no_grad():
            for k in expected:
                if state_dict[k].shape != sd[k].shape:
                    raise ValueError(f"{name_or_path}: {k} has shape {tuple(state_dict[k].shape)}, "
                                     f"expected {tuple(sd[k].shape)}: the file is damaged or another model's")
                sd[k].copy_(state_dict[k])
        return model

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas: tuple[float, float],
                             device_type: str, optimizer: str = 'adamw', muon_learning_rate: float = 0.02,
                             muon_momentum: float = 0.95):
        """AdamW over every parameter; or, with optimizer='muon', torch.optim.Muon over the 2-D weight matrices
        inside the Blocks (attention and MLP projections) and AdamW over the rest (embeddings, LayerNorms, biases)."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        muon = {n: p for n, p in params.items() if optimizer == 'muon' and n.startswith('transformer.h.')
                and p.dim() == 2}
        # every other 2D parameter (matmul weights, embeddings) decays; biases and layernorm weights do not
        decay_params = [p for n, p in params.items() if p.dim() >= 2 and n not in muon]
        nodecay_params = [p for p in params.values() if p.dim() < 2]
        optim_groups = [
            {'params': decay_params, 'weight_decay': weight_decay},
            {'params': nodecay_params, 'weight_decay': 0.0},
        ]
        # the fused AdamW kernel is much faster where the device has one (MPS's since torch 2.5)
        fused = device_type == 'cuda' or (device_type == 'mps' and torch.__version__ >= '2.5')
        adamw = torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, fused=fused)
        if optimizer != 'muon':
            return adamw
        from nanogpt.optim import with_muon  # Muon beside AdamW, behind one optimizer's interface: only needed here
        return with_muon(adamw, list(muon.values()), weight_decay, learning_rate, muon_learning_rate, muon_momentum)

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, flops_promised: float | None) -> float | None:
        """Model flops utilization: achieved FLOPS over flops_promised, the peak of the device in use
        (nanoGPT assumed an A100's 312 TFLOPS). None when that peak is unknown, e.g. on a CPU."""
        if flops_promised is None:
            return None
        # first estimate the number of flops we do per iteration, see PaLM paper Appendix B
        N = self.get_num_params()
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        flops_per_token = 6 * N + 12 * L * H * Q * T
        flops_per_iter = flops_per_token * T * fwdbwd_per_iter
        return flops_per_iter / dt / flops_promised

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, use_kv_cache: bool = True):
        """
        Take a conditioning sequence of indices idx (LongTensor of shape (b,t)) and complete
        the sequence max_new_tokens times, feeding the predictions back into the model each time.
        temperature=0 picks the most likely token. With the KV cache each step forwards one token; once the
        sequence outgrows block_size the model sees only its last block_size tokens, exactly as without it.
        Most likely you'll want to make sure to be in model.eval() mode of operation for this.
        """
        block_size = self.config.block_size
        kv_cache = None
        for _ in range(max_new_tokens):
            if not use_kv_cache:
                logits, _ = self(idx[:, -block_size:])
            elif kv_cache is not None and kv_cache.pos < block_size:
                logits, _ = self(idx[:, -1:], kv_cache=kv_cache)
            else:
                # (re)fill the cache with the whole context; past block_size the positions shift every step,
                # so each step starts over from the last block_size tokens
                kv_cache = KVCache(self.config)
                logits, _ = self(idx[:, -block_size:], kv_cache=kv_cache)
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, top_p)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def sample_next(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Draw the next token (b, 1) from logits (b, vocab_size)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    # the largest logit made 0, so that no temperature overflows (nor one below float32's range, which would be 0)
    logits = logits.float()
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / max(temperature, torch.finfo(torch.float32).tiny)
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float('inf')
    if top_p is not None and top_p < 1.0:
        # keep the smallest set of most likely tokens whose probability reaches top_p
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum_probs = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum_probs - F.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already enough
        drop[:, 0] = False  # the most likely token always stays (a tiny top_p would drop all to rounding)
        sorted_logits[drop] = -float('inf')
        logits = torch.full_like(logits, -float('inf')).scatter(1, sorted_idx, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1)
