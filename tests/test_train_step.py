"""train.py's importable pieces, in process and exact: the optimisation step (gradient accumulation, clipping,
the float16 GradScaler), the loss estimate and the atomic checkpoint write."""
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext

import pytest
import torch
from conftest import REPO

from model import GPT, GPTConfig
from nanogpt.checkpoint import save_checkpoint
from train import estimate_loss, train_step

VOCAB, T = 50, 16


class Batches:
    """A stand-in loader: hands out the given (x, y) batches in order, and fails if asked for more."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.next = 0

    def next_batch(self):
        batch = self.batches[self.next]  # an IndexError when asked for more
        self.next += 1
        return batch

    def reset(self):
        self.next = 0


def tiny_model(dtype=torch.float64):
    config = GPTConfig(block_size=T, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=True)
    return GPT(config, seed=0).to(dtype)


def batch(B=8, seed=0):
    tokens = torch.randint(VOCAB, (B, T + 1), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def sgd_step(model, batches, grad_accum, grad_clip=0.0, lr=0.1, scaler=None, ctx=None):
    """One train_step with plain SGD (the update is -lr * the gradient it was given); returns (loss, update)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scaler = scaler or torch.amp.GradScaler('cpu', enabled=False)
    loader = Batches(batches)
    before = flat(model)
    loss, _ = train_step(model, optimizer, scaler, loader, grad_accum, ctx or nullcontext(), grad_clip, lr)
    assert loader.next == len(loader.batches), 'train_step read fewer micro-batches than grad_accum'
    return loss.item(), flat(model) - before


@pytest.mark.parametrize('k', [2, 4])
def test_accumulation_equals_one_big_batch(k):
    x, y = batch(B=8)
    loss, update = sgd_step(tiny_model(), [(x, y)], 1)
    loss_k, update_k = sgd_step(tiny_model(), zip(x.chunk(k), y.chunk(k)), k)
    # the returned loss is the mean over the whole batch, as the model computes it in one pass
    assert loss == pytest.approx(tiny_model()(x, y)[1].item(), rel=1e-12)
    assert loss_k == pytest.approx(loss, rel=1e-12)
    assert update.abs().max() > 1e-4  # the step moved the weights
    assert torch.allclose(update_k, update, rtol=0, atol=1e-12)


def test_clipping_bounds_the_update():
    x, y = batch(B=8)
    _, free = sgd_step(tiny_model(), [(x, y)], 1, lr=1.0)
    clip = 0.05
    assert free.norm() > 10 * clip  # the gradient is well above the clip, so clipping must act
    _, clipped = sgd_step(tiny_model(), [(x, y)], 1, grad_clip=clip, lr=1.0)
    assert clipped.norm().item() == pytest.approx(clip, rel=1e-4)
    # the same direction, scaled down (clip_grad_norm_ adds 1e-6 to the norm it divides by)
    assert torch.allclose(clipped, free * clip / free.norm(), rtol=1e-5, atol=0)
    # clipping acts once on the accumulated gradient, not on each micro-batch's
    _, clipped_k = sgd_step(tiny_model(), zip(x.chunk(4), y.chunk(4)), 4, grad_clip=clip, lr=1.0)
    assert torch.allclose(clipped_k, clipped, rtol=0, atol=1e-12)
    # a clip above the gradient norm changes nothing
    _, loose = sgd_step(tiny_model(), [(x, y)], 1, grad_clip=1e6, lr=1.0)
    assert torch.allclose(loose, free, rtol=0, atol=1e-12)


def test_grad_scaler_clips_the_unscaled_gradients():
    x, y = batch(B=8)
    chunks = list(zip(x.chunk(2), y.chunk(2)))
    _, plain = sgd_step(tiny_model(torch.float32), chunks, 2, grad_clip=0.05, lr=1.0)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 12)
    _, scaled = sgd_step(tiny_model(torch.float32), chunks, 2, grad_clip=0.05, lr=1.0, scaler=scaler)
    # a power-of-two scale is undone exactly: clipping saw the true gradients
    assert torch.allclose(scaled, plain, rtol=1e-5, atol=1e-8)
    assert scaler.get_scale() == 2.0 ** 12  # no inf, no change of scale


def test_float16_autocast_with_the_scaler():
    # the path a float16 GPU takes, on the CPU: float16 autocast, scaled loss, unscale, clip, step
    x, y = batch(B=8)
    chunks = list(zip(x.chunk(2), y.chunk(2)))
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 12)
    ctx = torch.autocast('cpu', dtype=torch.float16)
    loss, update = sgd_step(tiny_model(torch.float32), chunks, 2, grad_clip=0.05, lr=1.0, scaler=scaler, ctx=ctx)
    loss32, update32 = sgd_step(tiny_model(torch.float32), chunks, 2, grad_clip=0.05, lr=1.0)
    assert loss == pytest.approx(loss32, rel=1e-2)
    assert update.norm().item() == pytest.approx(0.05, rel=1e-3)  # clipped at the true norm, not the scaled one
    assert torch.nn.functional.cosine_similarity(update, update32, dim=0) > 0.99


def test_inf_gradient_skips_the_step_and_lowers_the_scale():
    x, y = batch(B=8)
    model = tiny_model(torch.float32)
    model.transformer.wpe.weight.register_hook(lambda g: torch.full_like(g, float('inf')))
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 12)
    _, update = sgd_step(model, zip(x.chunk(2), y.chunk(2)), 2, grad_clip=1.0, lr=1.0, scaler=scaler)
    assert torch.all(update == 0)  # no weight moved, none became nan
    assert scaler.get_scale() == 2.0 ** 11
    assert all(p.grad is None for p in model.parameters())  # and the gradients were flushed


@pytest.mark.parametrize('grad_clip', [1.0, 0.0])
def test_nan_gradient_without_the_scaler_skips_the_step(grad_clip):
    # float32/bfloat16 have no scaler to skip a bad step: train_step must, or every weight becomes nan
    x, y = batch(B=8)
    model = tiny_model(torch.float32)
    model.transformer.wpe.weight.register_hook(lambda g: torch.full_like(g, float('nan')))
    _, update = sgd_step(model, [(x, y)], 1, grad_clip=grad_clip, lr=1.0)
    assert torch.all(update == 0)
    assert all(p.grad is None for p in model.parameters())


def test_estimate_loss_is_the_mean_over_eval_iters():
    model = tiny_model()
    model.train()
    batches = {split: [batch(B=4, seed=s) for s in range(3)] for split in ('train', 'val')}
    losses = estimate_loss(model, {split: Batches(b) for split, b in batches.items()}, 3, nullcontext())
    with torch.no_grad():
        for split, b in batches.items():
            expect = sum(model(x, y)[1].item() for x, y in b) / 3
            assert losses[split] == pytest.approx(expect, rel=1e-6)  # kept as float32
    assert model.training  # put back in training mode


# -----------------------------------------------------------------------------
# the checkpoint write

def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pt'
    save_checkpoint(str(path), {'iter_num': 1, 'w': torch.arange(1000)})
    good = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        with open(f, 'wb') as out:
            out.write(good[:100])  # part of a checkpoint, then the write fails
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', disk_full)
    with pytest.raises(OSError):
        save_checkpoint(str(path), {'iter_num': 2, 'w': torch.arange(1000)})
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ['ckpt.pt']  # the partial file is gone


KILLED_SAVE = """
import sys, time, torch
from nanogpt.checkpoint import save_checkpoint
path, ready = sys.argv[1], sys.argv[2]
def slow_save(obj, f, *args, **kwargs):
    with open(f, 'wb') as out:
        out.write(b'half a checkpoint')
        out.flush()
        open(ready, 'w').close()
        time.sleep(60)
torch.save = slow_save
save_checkpoint(path, {'iter_num': 2})
"""


def test_process_killed_mid_save_keeps_the_previous_checkpoint(tmp_path):
    path, ready = tmp_path / 'ckpt.pt', tmp_path / 'ready'
    save_checkpoint(str(path), {'iter_num': 1, 'w': torch.arange(1000)})
    good = path.read_bytes()
    proc = subprocess.Popen([sys.executable, '-c', KILLED_SAVE, str(path), str(ready)], cwd=REPO)
    deadline = time.time() + 60
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), 'the saving process never started writing'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_bytes() == good
    assert torch.load(path, weights_only=True)['iter_num'] == 1
