"""
Fitting a run to the machine (nanogpt.fit): a micro-batch that does not fit in memory trains as accumulated smaller ones
with the very losses of a run started at that size, a model that does not fit at all stops with one line,
torch.compile falls back when its compiler is missing, and sample.py draws its samples as one batch.
"""
import re
import subprocess

import pytest
import torch
from conftest import (REPO, after_meta, eval_losses, iter_losses, load_model_state, one_line_error, run_script,
                      torchrun, train)

# a model whose activations grow fast with the batch: 256 rows need about half a GB more address space than 16
WIDE = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=128', '--block_size=128',
        '--eval_iters=1', '--log_interval=1', '--max_iters=2', '--eval_interval=2', '--wandb_log=False',
        '--gradient_accumulation_steps=1']


def limited(limit: int, *args):
    """train.py (WIDE) with its address space limited to limit bytes (0: unlimited): (process, peak bytes)."""
    # large blocks mmap'd and unmapped when freed, as a GPU's caching allocator holds only what is live: without it
    # glibc's heap keeps freed address space and the limit would measure fragmentation rather than the run
    proc = run_script('tests/limited.py', str(limit), 'train.py', *WIDE, *args,
                      env={'MALLOC_MMAP_THRESHOLD_': '131072'}, check=False)
    peak = re.search(r'VmPeak:\s+(\d+) kB', proc.stderr)
    return proc, int(peak.group(1)) * 1024 if peak else None


@pytest.mark.slow
def test_a_batch_that_does_not_fit_trains_as_accumulated_smaller_ones(char_data, tmp_path):
    # calibrated on this machine: the address space a run reaches at 16 and at 256 rows, and a limit between them
    small, small_peak = limited(0, f'--dataset={char_data}', f'--out_dir={tmp_path / "small"}', '--batch_size=16')
    big, big_peak = limited(0, f'--dataset={char_data}', f'--out_dir={tmp_path / "big"}', '--batch_size=256',
                            '--fit_batch_size=False')
    assert small.returncode == 0 and big.returncode == 0, small.stderr[-2000:] + big.stderr[-2000:]
    limit = small_peak + (big_peak - small_peak) // 3
    proc, _ = limited(limit, f'--dataset={char_data}', f'--out_dir={tmp_path / "fitted"}', '--batch_size=256')
    assert proc.returncode == 0, proc.stderr[-3000:]
    note = re.search(r'note: batch_size=256 does not fit in the memory of cpu: training with batch_size=(\d+) and '
                     r'gradient_accumulation_steps=(\d+), the same 32,768 tokens per iteration', proc.stdout)
    assert note, proc.stdout[-3000:]
    fitted, steps = int(note.group(1)), int(note.group(2))
    assert fitted * steps == 256 and fitted < 256
    # the very run that starting at the chosen sizes gives: the probe read no data and drew no random numbers
    direct, _ = limited(0, f'--dataset={char_data}', f'--out_dir={tmp_path / "direct"}', f'--batch_size={fitted}',
                        f'--gradient_accumulation_steps={steps}')
    assert direct.returncode == 0, direct.stderr[-2000:]
    assert iter_losses(tmp_path / 'fitted') == iter_losses(tmp_path / 'direct')
    assert eval_losses(tmp_path / 'fitted') == eval_losses(tmp_path / 'direct')  # the same batches evaluated
    config = load_model_state(tmp_path / 'fitted')['config']
    assert (config['batch_size'], config['gradient_accumulation_steps']) == (fitted, steps)
    # without the limit, a resume keeps the fitted sizes: the batch stream continues as it was drawn
    proc, _ = limited(0, f'--dataset={char_data}', f'--out_dir={tmp_path / "fitted"}', '--batch_size=256',
                      '--init_from=resume', '--max_iters=3')
    assert f"resuming with the checkpoint's batch_size={fitted} and gradient_accumulation_steps={steps}" in proc.stdout


def test_the_size_chosen_leaves_room_for_adamws_state(monkeypatch):
    # a device whose memory the test counts: what is alive of the room the probe holds for AdamW's two tensors per
    # parameter (8 MB here), plus 1 MB of activations per row; beyond 10 MB it is out of memory. Room held: 2 rows
    # fit; without the room, all 8 would seem to, and the first optimizer step would run out of memory.
    import weakref

    from nanogpt.fit import fit_step
    from nanogpt.runtime import setup_runtime
    live = [0]
    empty_like = torch.empty_like

    def release(nbytes):
        live[0] -= nbytes

    def counted(p, *args, **kwargs):
        t = empty_like(p, *args, **kwargs)
        live[0] += t.nbytes
        weakref.finalize(t, release, t.nbytes)  # when the probe lets the room go
        return t

    class Wide(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1000, 1000))  # 4 MB

        def forward(self, x, y):
            if live[0] + x.size(0) * 2**20 > 10 * 2**20:
                raise torch.OutOfMemoryError('out of memory')
            return None, self.w.sum() * 0

    monkeypatch.setattr(torch, 'empty_like', counted)
    model = Wide()
    optimizer = torch.optim.AdamW(model.parameters())
    runtime = setup_runtime('cpu', 'float32')
    _, fitted, _ = fit_step(lambda compile: model, runtime, 8, 4, runtime.ctx, optimizer, True, False, False)
    assert fitted == 2 and live[0] == 0  # and the room given back
    # an evaluation (no optimizer step) holds no room
    _, fitted, _ = fit_step(lambda compile: model, runtime, 8, 4, runtime.ctx, optimizer, True, False, False,
                            train=False)
    assert fitted == 8


def test_not_even_one_row_fits_and_running_out_later_end_in_one_line(tmp_path):
    from nanogpt.fit import fit_step
    from nanogpt.runtime import setup_runtime

    class Huge(torch.nn.Module):  # asks the CPU allocator for a petabyte: a real refusal, on any machine
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, y):
            return None, (torch.empty(10 ** 15 // 4) * 0).sum() * self.w.sum()

    model = Huge()
    optimizer = torch.optim.AdamW(model.parameters())
    runtime = setup_runtime('cpu', 'float32')
    with pytest.raises(SystemExit, match=r'out of memory for one forward and backward at batch_size=1, block_size=8: '
                                         r'use a smaller model or block_size, --chunked_loss=True'):
        fit_step(lambda compile: model, runtime, 4, 8, runtime.ctx, optimizer, True, False, False)
    # where only the configured size was tried (no fitting, or FSDP), a smaller batch_size is the first advice
    with pytest.raises(SystemExit, match=r'at batch_size=4, block_size=8: use a smaller batch_size \(more '
                                         r'gradient_accumulation_steps\), a smaller model or block_size, '
                                         r'--chunked_loss=True, or --data_parallel=fsdp on several GPUs'):
        fit_step(lambda compile: model, runtime, 4, 8, runtime.ctx, optimizer, False, False, False)
    with pytest.raises(SystemExit, match=r'--chunked_loss=True$'):  # FSDP is what it runs already
        fit_step(lambda compile: model, runtime, 4, 8, runtime.ctx, optimizer, True, False, True)
    # out of memory later in a run, where nothing fits it any more: one line that says what to change
    script = tmp_path / 'later.py'
    hook = 'import torch\nfrom nanogpt.errors import one_line_errors\nfrom train import defaults\none_line_errors(defaults)\n'
    script.write_text(hook + 'torch.empty(10 ** 15 // 4)')
    proc = run_script(str(script), env={'PYTHONPATH': REPO}, check=False)
    one_line_error(proc, 'out of memory (tried to allocate 1000000000000000 bytes)', 'batch_size',
                   '--chunked_loss=True')
    # the same where another error wraps it, as torch.compile's backends do
    script.write_text(hook + 'try:\n    torch.empty(10 ** 15 // 4)\n'
                      'except RuntimeError as e:\n    raise ValueError("backend compiler failed") from e')
    proc = run_script(str(script), env={'PYTHONPATH': REPO}, check=False)
    one_line_error(proc, 'out of memory (tried to allocate 1000000000000000 bytes)', '--chunked_loss=True')


def test_out_of_memory_is_recognised_in_every_form_torch_and_cudas_libraries_raise():
    from nanogpt.errors import out_of_memory
    for message in ["CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
                    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
                    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
                    "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",  # cuDNN 9's words
                    "Triton Error [CUDA]: out of memory", "NCCL error: unhandled cuda error (out of memory)",
                    "[enforce fail at alloc_cpu.cpp:119] DefaultCPUAllocator: can't allocate memory"]:
        e = RuntimeError(message)
        assert out_of_memory(e) is e, message
        try:  # wrapped, as torch.compile's backends wrap what the compiled call raised
            raise ValueError('backend compiler failed') from e
        except ValueError as wrapper:
            assert out_of_memory(wrapper) is e
        try:  # raised while handling it (an implicit __context__, no `from`), as a cleanup that fails in turn does
            try:
                raise e
            except RuntimeError:
                raise KeyError('a cleanup that failed')
        except KeyError as later:
            assert later.__cause__ is None and out_of_memory(later) is e
    assert out_of_memory(torch.OutOfMemoryError('CUDA out of memory.')) is not None
    assert out_of_memory(RuntimeError('mat1 and mat2 shapes cannot be multiplied')) is None
    assert out_of_memory(ValueError('memory')) is None


def test_a_failed_attempt_holds_nothing_when_its_memory_is_given_back(monkeypatch):
    # the failed compiled call's error is kept (to name it), but not the tensors its frames held: free_memory (the
    # CUDA allocator's cache emptied, for cuBLAS and Triton) runs while they would still be alive
    import weakref

    from nanogpt import fit
    from nanogpt.runtime import setup_runtime
    held, alive_at_free = [], []

    class Failing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, y):
            activations = torch.ones(1000)
            held.append(weakref.ref(activations))
            try:
                raise OSError('no C++ compiler')
            except OSError as e:  # the chain a backend raises: the cause's frames hold tensors too
                raise RuntimeError('backend compiler failed') from e

    free_memory = fit.free_memory
    monkeypatch.setattr(fit, 'free_memory', lambda device: (free_memory(device), alive_at_free.append(
        [ref() is not None for ref in held])))
    runtime = setup_runtime('cpu', 'float32')
    plain, wrappers, wrapper_alive = Picky(), [], []

    def wrap(compile):  # as parallel.wrap_model: fit_step holds the only reference to what it makes
        if not compile:  # by now the failed wrapper (a DDP's gradient buckets: 4 bytes a parameter) is let go
            wrapper_alive.append(wrappers[0]() is not None)
            return plain
        model = Failing()
        wrappers.append(weakref.ref(model))
        return model
    result = fit.fit_step(wrap, runtime, 4, 8, runtime.ctx, torch.optim.AdamW(plain.parameters()), True, True, False)
    assert result == (plain, 2, False)
    assert alive_at_free[0] == [False]  # the first free_memory: after the compile failure, before the retry
    assert wrapper_alive == [False]


def test_each_size_tried_compiled_is_compiled_afresh_as_the_static_graph_the_run_uses():
    # compiled, a size that does not fit is followed by a graph for the next size alone: not the graph for any
    # batch size that dynamo would otherwise make on seeing a second size, nor a graph for model(x, x)
    from nanogpt.fit import fit_step
    from nanogpt.runtime import setup_runtime
    torch._dynamo.reset()
    graphs = []

    def backend(gm, inputs):  # notes the sizes of each graph's inputs: ints, or symbols where it is dynamic
        graphs.append([type(s) for t in inputs for s in (t.shape if isinstance(t, torch.Tensor) else [t])])
        return gm.forward

    model = Rows()  # more than 2 rows do not fit
    runtime = setup_runtime('cpu', 'float32')
    compiled = torch.compile(model, backend=backend)
    result = fit_step(lambda compile: compiled, runtime, 8, 4, runtime.ctx, torch.optim.AdamW(model.parameters()),
                      True, True, False)
    assert result == (compiled, 2, True)
    assert len(graphs) == 3 and all(kinds and set(kinds) == {int} for kinds in graphs), graphs
    compiled(torch.zeros((2, 4), dtype=torch.long), torch.ones((2, 4), dtype=torch.long))  # the run's first step
    assert len(graphs) == 3  # nothing compiled again
    torch._dynamo.reset()


class Rows(torch.nn.Module):
    """A model for which more than `rows` rows are a real out-of-memory (the CPU allocator refuses a petabyte)."""

    def __init__(self, rows: int = 2):
        super().__init__()
        self.rows = rows
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, y):
        if len(x) > self.rows:
            torch.empty(10 ** 15 // 4)
        return None, (x.float().mean() + y.float().mean()) * self.w.sum()


class Picky(Rows):
    """Rows that notes how it was called and draws random numbers (as dropout does) first; its generation runs out
    of memory the same way after a first random draw, as a long generation that ran out part way would have made."""

    def __init__(self, model=None, rows: int = 2):
        super().__init__(rows)
        self.model, self.grad_enabled, self.modes = model, [], []

    def forward(self, x, y):
        self.grad_enabled.append(torch.is_grad_enabled())
        self.modes.append((self.training, x is y))
        torch.rand(3)  # as dropout draws
        return super().forward(x, y)

    def generate(self, x, *args, **kwargs):
        torch.rand(7)
        if len(x) > self.rows:
            torch.empty(10 ** 15 // 4)
        return self.model.generate(x, *args, **kwargs)


def test_an_evaluation_fits_a_forward_and_a_retried_generation_draws_what_it_would_have():
    from model import GPT, GPTConfig
    from nanogpt.fit import fit_step, generate_fitted
    from nanogpt.runtime import setup_runtime
    runtime = setup_runtime('cpu', 'float32')
    # an eval_only run probes a forward without gradients, and fits it as a training run would
    model = Picky()
    optimizer = torch.optim.AdamW(model.parameters())
    rng = torch.get_rng_state()
    _, rows, _ = fit_step(lambda compile: model, runtime, 8, 4, runtime.ctx, optimizer, True, False, False, train=False)
    assert rows == 2
    assert torch.equal(torch.get_rng_state(), rng)  # what the probe drew is given back
    assert model.grad_enabled == [False] * 3 and not optimizer.state
    # in eval mode, as estimate_loss runs it (compiled: the graph it will use), with targets a tensor of their own
    assert model.modes == [(False, False)] * 3 and model.training
    # 5 samples that do not fit as one batch are drawn in batches of 3 and 2, with the random numbers those
    # batches draw from the seed: not after what the failed attempt drew
    gpt = GPT(GPTConfig(block_size=16, vocab_size=11, n_layer=1, n_head=2, n_embd=8)).eval()
    prompt = torch.zeros((1, 1), dtype=torch.long)
    torch.manual_seed(3)
    fitted = generate_fitted(Picky(gpt, rows=3), prompt, 5, 10, temperature=1.0)
    torch.manual_seed(3)
    direct = [(torch.rand(7), gpt.generate(prompt.expand(n, -1), 10, temperature=1.0))[1] for n in (3, 2)]
    assert torch.equal(fitted, torch.cat(direct))


def test_an_evaluation_in_parts_forwards_parts_and_gives_the_losses_of_whole_batches():
    from model import GPT, GPTConfig
    from train import estimate_loss

    class Batches:  # the same two 4-row batches after each reset, as TokenLoader's eval loaders
        def __init__(self, seed):
            g = torch.Generator().manual_seed(seed)
            self.batches = [torch.randint(11, (2, 4, 8), generator=g) for _ in range(2)]

        def reset(self):
            self.k = 0

        def next_batch(self):
            self.k += 1
            return tuple(self.batches[self.k - 1])

    class Rows(GPT):  # GPT that notes the rows of each forward
        rows = []

        def forward(self, idx, targets=None):
            self.rows.append(len(idx))
            return super().forward(idx, targets)

    model = Rows(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8))
    loaders = {'train': Batches(0), 'val': Batches(1)}
    whole = estimate_loss(model, loaders, 2, torch.no_grad())
    assert model.rows == [4] * 4
    model.rows.clear()
    parts = estimate_loss(model, loaders, 2, torch.no_grad(), micro_batch=2)
    assert model.rows == [2] * 8 and parts == pytest.approx(whole, rel=1e-6)


def test_the_memory_named_is_what_this_process_may_use_of_the_gpu(monkeypatch):
    # torch.cuda.set_per_process_memory_fraction(0.25) on an 80 GiB GPU leaves this process 20 GiB: the notes say so
    from types import SimpleNamespace

    from nanogpt.fit import device_memory
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda i: SimpleNamespace(total_memory=80 * 2**30 * i))
    monkeypatch.setattr(torch.cuda, 'get_per_process_memory_fraction', lambda i: 0.25 * i)
    assert device_memory('cuda') == device_memory('cuda:1') == '20.0 GiB' and device_memory('cuda:2') == '80.0 GiB'
    assert device_memory('cpu') == ''


@pytest.mark.slow
def test_compile_falls_back_when_its_compiler_is_missing(char_data, tmp_path):
    proc = train(char_data, tmp_path / 'fallback', '--max_iters=3', '--compile=True',
                 env={'CXX': '/nonexistent/g++', 'TORCHINDUCTOR_CACHE_DIR': str(tmp_path / 'inductor')},
                 fresh=True)  # torch reads CXX as it starts
    assert re.search(r'note: torch.compile does not work here \(\w+: .+\): training uncompiled', proc.stdout), \
        proc.stdout[-3000:]
    train(char_data, tmp_path / 'eager', '--max_iters=3', '--compile=False')
    assert iter_losses(tmp_path / 'fallback') == iter_losses(tmp_path / 'eager')


def fit_worker(scenario: str):
    """tests/fit_worker.py under torchrun on 2 gloo ranks: (exit code, output); a launch still running after 120
    s (ranks waiting on each other) fails the test."""
    proc = subprocess.Popen(torchrun('--standalone', '--nproc_per_node=2', 'tests/fit_worker.py', scenario), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun ends its workers (each in a session of its own) when it is asked to end
        try:
            out = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = ''
        pytest.fail(f"the ranks of {scenario} waited on each other: {out[-2000:]}")
    return proc.returncode, out


@pytest.mark.slow
def test_ranks_that_see_different_things_act_together():
    # DDP: every rank takes the smallest size that fits anywhere; a compile failure on one rank means uncompiled
    # everywhere; a rank's own error is raised there, and the others say that it is above
    code, out = fit_worker('ddp')
    assert code == 0, out[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: 2 rows\n" in out and f"rank {rank}: 2 rows, compiled False, made [True, False]" in out
    # said once, by the rank where it failed, with its cause
    assert out.count('note: torch.compile does not work here') == 1
    assert 'note: torch.compile does not work here (backend compiler failed: no C++ compiler): training uncompiled' \
           in out
    assert "rank 1: ValueError: a bug on rank 1" in out
    assert "rank 0: SystemExit: error: the first step failed on another rank: its error is above" in out
    # where not even one row fits on one rank, every rank ends, and one line says why
    assert "error: out of memory for one forward and backward at batch_size=1, block_size=4" in out
    assert "rank 0: exit 1\n" in out and "rank 1: exit 1\n" in out and out.count('error: out of memory') == 1
    # FSDP: rank 1 out of memory while rank 0 waits for it in a collective ends the run with its line, at once
    code, out = fit_worker('fsdp')
    assert code != 0 and 'rank 0: fitted' not in out
    assert "rank 1: error: out of memory for one forward and backward at batch_size=8, block_size=4: use a smaller " \
           "batch_size" in out, out[-3000:]


def test_sample_draws_its_samples_as_one_batch_reproducibly(char_data, tmp_path):
    train(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    args = ['sample.py', f'--out_dir={tmp_path}', '--device=cpu', '--num_samples=4', '--max_new_tokens=30']
    first, second = run_script(*args), run_script(*args)
    assert after_meta(first.stdout) == after_meta(second.stdout)  # the seed decides every sample
    samples = after_meta(first.stdout).split('---------------\n')[:-1]
    assert len(samples) == 4 and len(set(samples)) == 4
    assert '(4 x 30 new tokens in' in first.stderr  # one timing: one batch


@pytest.mark.parametrize('key, value', [('n_layer', 2**63), ('block_size', 10**23), ('n_embd', 2**40)])
def test_a_model_whose_weights_alone_exceed_the_machines_memory_is_refused_before_it_is_built(key, value):
    # building one layer at a time would take the machine's memory (n_layer=2**63 never ended; a huge block_size
    # ended in a C++ overflow traceback)
    from nanogpt.fit import check_model_size
    shape = dict(n_layer=2, n_embd=32, vocab_size=64, block_size=32)
    check_model_size(**shape)  # a small one passes
    with pytest.raises(SystemExit, match=rf"{key}={value}.* parameters\): its weights alone would take .* GiB of "
                                         r"memory, more than this machine's \d+ GiB: choose a smaller model"):
        check_model_size(**{**shape, key: value})


def test_what_would_not_fit_in_memory_is_refused_before_any_work():
    from nanogpt.fit import check_memory
    check_memory(1, 'a byte', 'never')
    with pytest.raises(SystemExit, match=r"1 sample\(s\) would take 7.45e\+09 GiB of memory, more than this machine's"):
        check_memory(8 * 10**18, '1 sample(s)', 'ask for fewer')
