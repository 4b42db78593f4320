"""nanogpt.runtime.setup_runtime: the device and dtype chosen by 'auto', and one-line refusals of devices and dtypes."""
import contextlib
import os

import pytest
import torch

from nanogpt.runtime import setup_runtime


def test_cpu_defaults_to_float32_without_autocast():
    rt = setup_runtime('cpu', 'auto')
    assert (rt.device, rt.device_type, rt.dtype, rt.ddp, rt.world_size) == ('cpu', 'cpu', 'float32', False, 1)
    assert isinstance(rt.ctx, contextlib.nullcontext)


def test_cpu_bfloat16_autocasts_matmuls():
    rt = setup_runtime('cpu', 'bfloat16')
    with rt.ctx:
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16


def test_seed_makes_draws_repeat():
    setup_runtime('cpu', 'float32', seed=7)
    a = torch.rand(3)
    setup_runtime('cpu', 'float32', seed=7)
    assert torch.equal(a, torch.rand(3))


@pytest.mark.parametrize('device, message', [
    ('gpu', "device='gpu' is not a device"),
    ('cpu:banana', "is not a device"),
    ('meta', "device='meta' is not a device this project runs on"),  # torch's, but it holds no data
])
def test_bad_device_strings(device, message):
    with pytest.raises(SystemExit, match=message):
        setup_runtime(device)


@pytest.mark.parametrize('seed', [2 ** 64, -2 ** 63 - 1])
def test_a_seed_beyond_64_bits_is_one_line(seed):
    with pytest.raises(SystemExit, match=rf'^error: seed={seed}: a seed must fit in 64 bits'):
        setup_runtime('cpu', seed=seed)


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_index_without_cuda():
    with pytest.raises(SystemExit, match=r"device='cuda:3' but CUDA is not available"):
        setup_runtime('cuda:3')


def test_unknown_dtype():
    with pytest.raises(SystemExit, match="dtype='float64'"):
        setup_runtime('cpu', 'float64')


@pytest.mark.parametrize('env, says', [
    (dict(RANK='0'), 'RANK and WORLD_SIZE are set together'),
    (dict(WORLD_SIZE='3'), 'RANK and WORLD_SIZE are set together'),
    (dict(RANK='abc', WORLD_SIZE='2'), 'as integers'),
    (dict(RANK='0', WORLD_SIZE='1'), 'MASTER_ADDR and MASTER_PORT are needed'),
    (dict(RANK='2', WORLD_SIZE='2', MASTER_ADDR='localhost', MASTER_PORT='29500'), 'a rank below WORLD_SIZE'),
], ids=['rank-alone', 'world-size-alone', 'not-an-integer', 'no-master', 'rank-too-high'])
def test_torchrun_variables_set_by_hand_are_checked_together(monkeypatch, env, says):
    # set inconsistently, they made a process wait forever for ranks that never come, or fail in torch
    from nanogpt.runtime import distributed_env
    for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit, match=says):
        distributed_env()
    assert distributed_env(ddp=False) == (False, 0, 0, 1)  # sample.py and perplexity.py run in one process


def test_a_closed_terminal_stops_a_run_like_sigterm_unless_nohup_ignores_it():
    import signal
    import types

    from nanogpt.runtime import RunGuard
    runtime = types.SimpleNamespace(device='cpu', ddp=False)
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        guard = RunGuard(runtime, 3, 'unused', log=lambda **r: None)
        os.kill(os.getpid(), signal.SIGHUP)
        assert guard.check(1, True) == (False, signal.SIGHUP)  # caught: the run saves and ends at this step
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup python train.py ...
        RunGuard(runtime, 3, 'unused', log=lambda **r: None)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
