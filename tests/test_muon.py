"""
optimizer='muon': torch.optim.Muon for the weight matrices inside the Blocks, AdamW for the rest. The parameters
are routed by kind; one step of the project is torch's own Muon step (and AdamW's) on the same gradients; the
float16 GradScaler skips an overflowing step for both; train.py resumes a Muon run exactly and refuses to continue
it with the other optimizer; DDP equals one process with twice the accumulation; FSDP and an old torch are refused
in one line; bench.py times both.
"""
import re
from contextlib import nullcontext

import pytest
import torch
from conftest import ddp_train, eval_losses, iter_losses, load_model_state, one_line_error, run_script, train
from test_train_step import Batches, batch, tiny_model

from model import GPT, GPTConfig
from nanogpt.optim import Optimizers
from nanogpt.runtime import check_needs
from train import train_step

pytestmark = pytest.mark.skipif(not hasattr(torch.optim, 'Muon'), reason='torch.optim.Muon needs torch >= 2.9')
BLOCK_MATRICES = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')


def names_of(model, params) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


def test_the_blocks_matrices_go_to_muon_and_everything_else_to_adamw():
    model = tiny_model(torch.float32)  # bias=True: every kind of parameter there is
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', 'muon')
    muon, adamw = optimizer.parts['muon'], optimizer.parts['optimizer']
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = names_of(model, [p for g in muon.param_groups for p in g['params']])
    in_adamw = names_of(model, [p for g in adamw.param_groups for p in g['params']])
    assert in_muon == {f'transformer.h.{i}.{m}' for i in range(2) for m in BLOCK_MATRICES}
    assert in_adamw == {n for n, _ in model.named_parameters()} - in_muon
    assert {'transformer.wte.weight', 'transformer.wpe.weight'} <= in_adamw  # wte is also lm_head
    decayed = names_of(model, adamw.param_groups[0]['params'])
    assert decayed == {'transformer.wte.weight', 'transformer.wpe.weight'}
    assert all(p.dim() == 1 for p in adamw.param_groups[1]['params'])
    assert muon.param_groups[0]['lr_scale'] == pytest.approx(0.02 / 1e-3)
    # the default is AdamW over everything, as before
    plain = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    assert type(plain) is torch.optim.AdamW and sum(len(g['params']) for g in plain.param_groups) == \
        len(list(model.parameters()))


def test_one_step_is_torchs_muon_and_adamw_on_the_same_gradients():
    lr, muon_lr = 2.0 ** -10, 2.0 ** -6  # exact in binary, so lr * (muon_lr / lr) is muon_lr exactly
    ours, theirs = tiny_model(torch.float32), tiny_model(torch.float32)
    x, y = batch(B=8)
    optimizer = ours.configure_optimizers(0.1, lr, (0.9, 0.95), 'cpu', 'muon', muon_lr, 0.9)
    for _ in range(2):  # the second step uses the momentum buffer the first one left
        train_step(ours, optimizer, torch.amp.GradScaler('cpu', enabled=False), Batches([(x, y)]), 1,
                   nullcontext(), 0.0, lr)
    matrices = [p for n, p in theirs.named_parameters() if n.endswith(BLOCK_MATRICES) and '.h.' in n]
    rest = [p for p in theirs.parameters() if all(p is not m for m in matrices)]
    muon = torch.optim.Muon(matrices, lr=muon_lr, weight_decay=0.1, momentum=0.9)
    adamw = torch.optim.AdamW([{'params': [p for p in rest if p.dim() == 2], 'weight_decay': 0.1},
                               {'params': [p for p in rest if p.dim() < 2], 'weight_decay': 0.0}],
                              lr=lr, betas=(0.9, 0.95))
    for _ in range(2):
        theirs(x, y)[1].backward()
        muon.step(), adamw.step()
        muon.zero_grad(), adamw.zero_grad()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(ours.transformer.h[0].attn.c_attn.weight,
                           tiny_model(torch.float32).transformer.h[0].attn.c_attn.weight), 'nothing trained'


@pytest.mark.parametrize('where', ['transformer.wpe.weight', 'transformer.h.0.mlp.c_fc.weight'])
def test_an_overflowing_float16_step_is_skipped_by_both_optimizers(where):
    model = tiny_model(torch.float32)
    dict(model.named_parameters())[where].register_hook(lambda g: torch.full_like(g, float('inf')))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', 'muon')
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 12)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch(B=8)
    train_step(model, optimizer, scaler, Batches(zip(x.chunk(2), y.chunk(2))), 2, nullcontext(), 1.0, 1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # neither optimizer stepped
    assert scaler.get_scale() == 2.0 ** 11 and not optimizer.state  # no Muon momentum, no AdamW moments
    assert all(p.grad is None for p in model.parameters())


def test_float16_scaled_steps_equal_unscaled_ones():
    # the scaler unscales both optimizers' gradients before they step: the same update as without scaling
    x, y = batch(B=8)
    results = []
    for scaler in (torch.amp.GradScaler('cpu', init_scale=2.0 ** 10), torch.amp.GradScaler('cpu', enabled=False)):
        model = tiny_model(torch.float32)
        optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', 'muon')
        train_step(model, optimizer, scaler, Batches([(x, y)]), 1, nullcontext(), 1.0, 1e-3)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_a_muon_run_resumes_exactly_and_saves_both_states(char_data, tmp_path):
    args = ['--optimizer=muon', '--dropout=0.1', '--eval_interval=5', '--lr_decay_iters=10']
    train(char_data, tmp_path / 'a', '--max_iters=10', *args)
    train(char_data, tmp_path / 'b', '--max_iters=5', *args)
    train(char_data, tmp_path / 'b', '--max_iters=10', '--init_from=resume', *args)
    a, b = iter_losses(tmp_path / 'a'), iter_losses(tmp_path / 'b')
    assert sorted(b) == [6, 7, 8, 9, 10] and all(a[i] == b[i] for i in b), (a, b)
    sa, sb = load_model_state(tmp_path / 'a'), load_model_state(tmp_path / 'b')
    for k, v in sa['model'].items():
        assert torch.equal(v, sb['model'][k]), k
    # nanoGPT's 'optimizer' key holds AdamW's state (embeddings, LayerNorms), 'muon' the matrices' momentum
    assert len(sa['muon']['state']) == 4 * 2 and len(sa['optimizer']['state']) == 2 + 2 * 2 + 1
    assert all(torch.equal(sa['muon']['state'][i]['momentum_buffer'], sb['muon']['state'][i]['momentum_buffer'])
               for i in sa['muon']['state'])
    # a resume with the other optimizer stops, in one line, before it trains
    proc = train(char_data, tmp_path / 'b', '--max_iters=12', '--init_from=resume', '--optimizer=adamw', check=False)
    one_line_error(proc, "was trained with optimizer='muon', this run asks for 'adamw'", '--optimizer=muon')
    assert max(iter_losses(tmp_path / 'b')) == 10


def test_an_adamw_checkpoint_is_not_continued_by_muon(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    proc = train(char_data, tmp_path, '--max_iters=4', '--init_from=resume', '--optimizer=muon', check=False)
    one_line_error(proc, "was trained with optimizer='adamw'", '--optimizer=adamw')


def test_ddp_with_muon_equals_one_process_with_twice_the_accumulation(char_data, tmp_path):
    common = ['--optimizer=muon', '--max_iters=4', '--eval_interval=2', '--dropout=0.0',
              '--gradient_accumulation_steps=4', '--eval_iters=4']
    train(char_data, tmp_path / 'single', *common)
    ddp_train(char_data, tmp_path / 'ddp', *common)
    a, b = eval_losses(tmp_path / 'single'), eval_losses(tmp_path / 'ddp')
    assert sorted(a) == sorted(b) == [0, 2, 4] and all(abs(a[i] - b[i]) <= 1e-4 for i in a), (a, b)
    ss, sd = load_model_state(tmp_path / 'single'), load_model_state(tmp_path / 'ddp')
    # Newton-Schulz runs in bfloat16, where gradients summed in another order round apart: measured here, a noise of
    # 1e-7 of the gradients moves Muon's matrices 3-4% of their training motion in 4 steps, AdamW's weights 0.1%.
    # Ranks that did not sync would be apart by about all of it
    init = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=16, bias=False)).state_dict()
    for k, v in ss['model'].items():
        moved, apart = (v - init[k]).norm(), (v - sd['model'][k]).norm()
        assert apart <= (0.1 if k.endswith(BLOCK_MATRICES) else 1e-3) * moved, (k, float(apart / moved))


def test_fsdp_and_an_old_torch_are_refused_before_any_work(char_data, tmp_path, monkeypatch):
    proc = train(char_data, tmp_path / 'out', '--optimizer=muon', '--data_parallel=fsdp', check=False)
    one_line_error(proc, "optimizer='muon' does not work with data_parallel='fsdp'", '--data_parallel=ddp')
    assert not (tmp_path / 'out').exists()
    monkeypatch.delattr(torch.optim, 'Muon')
    with pytest.raises(SystemExit, match=r"optimizer='muon' needs torch >= 2.9 \(torch.optim.Muon\), this is torch"):
        check_needs({'optimizer': 'muon'})
    check_needs({'optimizer': 'adamw'})


def test_bench_times_both_optimizers():
    proc = run_script('bench.py', '--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32',
                      '--block_size=32', '--batch_size=4', '--burnin_steps=1', '--benchmark_steps=2',
                      '--real_data=False', '--optimizer=adamw,muon')
    rows = re.findall(r'^(adamw|muon) \| ([\d.]+) \|', proc.stdout, re.M)
    assert [name for name, _ in rows] == ['adamw', 'muon'] and all(float(ms) > 0 for _, ms in rows), proc.stdout


def test_optimizers_is_one_optimizer_to_its_users():
    model = tiny_model(torch.float32)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', 'muon')
    assert isinstance(optimizer, Optimizers)
    assert len(optimizer.param_groups) == 3 and not optimizer.state
    x, y = batch(B=4)
    model(x, y)[1].backward()
    optimizer.step()
    assert len(optimizer.state) == len(list(model.parameters()))
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())
