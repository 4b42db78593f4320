"""
bench.py: it times train.py's step on synthetic and real data, sweeps and saves, profiles, picks a small model on a
fresh CPU, and runs the DDP and FSDP steps under torchrun; benchmarks/fsdp_memory.py counts each rank's state.
"""
import json
import re

import pytest

from conftest import one_line_error, run_ranks, run_script
from model import GPT, GPTConfig

SMALL = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
         '--batch_size=4', '--burnin_steps=2', '--benchmark_steps=3']


def test_bench_synthetic_and_real_data(char_data):
    proc = run_script('bench.py', *SMALL, '--real_data=False', '--gradient_accumulation_steps=2')
    m = re.search(r'loss ([\d.]+): ([\d.]+) ms/iter, ([\d,]+) tokens/s, MFU n/a', proc.stdout)
    assert m, proc.stdout
    assert float(m.group(2)) > 0 and int(m.group(3).replace(',', '')) > 0
    assert '256 tokens per step' in proc.stdout  # 4 x 32 x 2 accumulation steps
    proc = run_script('bench.py', *SMALL, f'--dataset={char_data}', '--vocab_size=16', '--peak_flops=1e12')
    assert re.search(r'ms/iter, [\d,]+ tokens/s, MFU \d+\.\d+%', proc.stdout), proc.stdout
    # no vocab_size given: the dataset's characters, as train.py's model on it (not GPT-2's 50304), said so
    proc = run_script('bench.py', *SMALL, f'--dataset={char_data}')
    assert 'has a vocabulary of 16 characters: timing vocab_size=16' in proc.stdout
    assert '128 tokens per step, real data, vocab_size 16' in proc.stdout
    proc = run_script('bench.py', *SMALL, f'--dataset={char_data}', '--vocab_size=8', check=False)
    assert proc.returncode != 0 and "outside the model's vocabulary of 8" in proc.stderr


def test_bench_profile(tmp_path):
    proc = run_script('bench.py', *SMALL, '--real_data=False', '--profile=True', cwd=tmp_path)
    assert 'aten::' in proc.stdout and (tmp_path / 'bench_log').is_dir()


def test_bench_sweeps_and_writes_json(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_script('bench.py', *SMALL, '--real_data=False', '--batch_size=2,4', '--gradient_accumulation_steps=1,2',
                      f'--json={out}')
    lines = re.findall(r'^loss [\d.]+: ([\d.]+) ms/iter', proc.stdout, re.M)
    assert len(lines) == 4, proc.stdout  # every combination
    assert 'batch_size | gradient_accumulation_steps | ms/iter | tokens/s | MFU | peak memory' in proc.stdout
    assert 'torch ' in proc.stdout and 'attention SDPA' in proc.stdout  # what a person compares GPUs by
    saved = json.load(open(out))
    settings = [(r['batch_size'], r['gradient_accumulation_steps']) for r in saved['results']]
    assert settings == [('2', '1'), ('2', '2'), ('4', '1'), ('4', '2')]
    assert all(r['ms'] > 0 and r['tokens_per_s'] > 0 and 'torch ' in r['machine'] for r in saved['results'])
    # a second run into the same file adds its rows, each with its command: the first one's stay
    run_script('bench.py', *SMALL, '--real_data=False', '--batch_size=8', f'--json={out}')
    rows = json.load(open(out))['results']
    assert [r.get('batch_size') for r in rows] == ['2', '2', '4', '4', None] and '--batch_size=8' in rows[-1]['command']
    # another tool's results (lm-eval's have a 'results' key too) are never replaced
    (tmp_path / 'lm_eval.json').write_text(json.dumps({'results': {'hellaswag': {}}, 'config': {}}))
    proc = run_script('bench.py', *SMALL, '--real_data=False', f'--json={tmp_path / "lm_eval.json"}', check=False)
    one_line_error(proc, 'holds something other than bench results')
    proc = run_script('bench.py', *SMALL, '--batch_sise=2,4', check=False)
    assert proc.returncode != 0 and "did you mean 'batch_size'" in proc.stderr


def test_bench_on_a_fresh_machine_times_a_small_model_on_synthetic_tokens(tmp_path):
    # no prepared data and no size given: a CPU times a small GPT on synthetic tokens, and says both
    proc = run_script('bench.py', '--device=cpu', f'--dataset={tmp_path}', '--burnin_steps=1', '--benchmark_steps=1')
    assert 'timing synthetic tokens' in proc.stdout and 'times a small GPT' in proc.stdout
    assert '4 layers, 128 wide, 1,024 tokens per step, synthetic data' in proc.stdout
    assert re.search(r'ms/iter, [\d,]+ tokens/s', proc.stdout) and 'burn-in 1/1' in proc.stdout
    assert 'ms/iter | tokens/s | MFU | peak memory' in proc.stdout  # the table, of one setting here


@pytest.mark.slow
def test_bench_times_the_ddp_and_fsdp_steps_under_torchrun(tmp_path):
    for data_parallel in ('ddp', 'fsdp'):
        out = tmp_path / f'{data_parallel}.json'
        proc = run_ranks('bench.py', *SMALL, '--real_data=False', '--vocab_size=64', f'--data_parallel={data_parallel}',
                         f'--json={out}', timeout=300)
        assert f'256 tokens per step, synthetic data, 2 ranks, {data_parallel.upper()}' in proc.stdout  # 2 x 4 x 32
        assert proc.stdout.count('ms/iter,') == 1  # rank 0 prints
        result = json.load(open(out))['results'][0]
        assert result['ranks'] == 2 and result['data_parallel'] == data_parallel


@pytest.mark.slow
def test_the_memory_benchmark_counts_what_each_rank_holds(tmp_path):
    # benchmarks/fsdp_memory.py's figure: params+grads+AdamW per rank, halved by FSDP on 2 ranks, whole under DDP
    out = tmp_path / 'memory.json'
    run_script('benchmarks/fsdp_memory.py', '--ranks=2', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
               '--batch_size=4', '--vocab_size=64', f'--json={out}', timeout=300)
    state = {r['data_parallel']: r['state_gib'] * 2**30 for r in json.load(open(out))}
    assert sorted(state) == ['ddp', 'fsdp']
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64, bias=False))
    params = list(model.parameters())
    # float32 weights, gradients and AdamW's two moments, and AdamW's step count (a float32) per parameter tensor
    assert state['ddp'] == 16 * sum(p.numel() for p in params) + 4 * len(params)
    assert 0.45 < state['fsdp'] / state['ddp'] < 0.6  # the larger of the two ranks' shards


def test_a_sweep_checks_every_setting_first_and_reports_a_failing_one_in_its_row(tmp_path, char_data):
    # settings the configurator refuses, an empty value, and a --json in a missing folder: refused before any runs
    for bad, fragment in [(['--n_embd=64,100', '--n_head=8'], 'n_embd=100'), (['--batch_size=4,'], 'batch_size'),
                          ([f'--json={tmp_path}/missing/b.json', '--batch_size=2,4'], 'folder does not exist')]:
        proc = run_script('bench.py', *SMALL, '--real_data=False', *bad, check=False)
        one_line_error(proc, fragment)
        assert 'ms/iter' not in proc.stdout and 'burn-in' not in proc.stdout  # nothing ran
    # a setting that fails only when it runs (its vocabulary is too small for the data): its row says why, and the
    # settings after it still run and are saved
    out = tmp_path / 'bench.json'
    proc = run_script('bench.py', *SMALL, f'--dataset={char_data}', '--vocab_size=8,16', f'--json={out}')
    assert re.search(r"^8 \| failed: .*outside the model's vocabulary of 8", proc.stdout, re.M), proc.stdout
    assert re.search(r'^16 \| [\d.]+ \| ', proc.stdout, re.M), proc.stdout
    assert [r['vocab_size'] for r in json.load(open(out))['results']] == ['8', '16']


def test_a_sweep_opens_its_dataset_once(char_data, tmp_path):
    # a dataset nanoGPT prepared (no meta.json): its note is said once, not once per setting
    import shutil
    for split in ('train', 'val'):
        shutil.copy(f'{char_data}/{split}.bin', tmp_path / f'{split}.bin')
    proc = run_script('bench.py', *SMALL, f'--dataset={tmp_path}', '--vocab_size=16', '--batch_size=2,4')
    assert proc.stdout.count('has no meta.json') == 1, proc.stdout
    assert re.search(r'^4 \| [\d.]+ \| ', proc.stdout, re.M), proc.stdout


def test_only_keys_of_numbers_flags_and_names_are_swept_and_the_last_given_counts():
    from nanogpt.sweep import split_sweep
    sweepable = {'batch_size', 'dtype'}
    fixed, swept = split_sweep(['--batch_size=2', '--batch_size=4,8', '--json=r,1.json', '--dtype=float32,float16',
                                '--dtype=float32'], sweepable)
    assert swept == {'batch_size': ['4', '8']}  # a path keeps its comma; the dtype given after the sweep counts
    assert fixed == ['--json=r,1.json', '--dtype=float32']


def test_a_results_file_is_only_ever_bench_results_and_every_setting_is_checked_first(tmp_path):
    from nanogpt.sweep import settings
    (tmp_path / 'ckpt.pt').write_bytes(b'PK\x03\x04 a checkpoint')
    with pytest.raises(SystemExit, match=r"the results file's name ends in .json"):  # nor a dataset's val.bin
        settings({}, str(tmp_path / 'ckpt.pt'), lambda args: None)
    (tmp_path / 'stats.json').write_text('{"tokenizer": "char", "vocab_size": 3, "chars": "abc"}')
    with pytest.raises(SystemExit, match=r'holds something other than bench results'):
        settings({}, str(tmp_path / 'stats.json'), lambda args: None)
    for name in ('meta.json', 'config.json'):  # read as a dataset's, a model's, even where none is yet
        with pytest.raises(SystemExit, match=rf'{name} is the name of a dataset.s or a model.s file'):
            settings({}, str(tmp_path / name), lambda args: None)
    assert (tmp_path / 'ckpt.pt').read_bytes() == b'PK\x03\x04 a checkpoint'
    (tmp_path / 'old.json').write_text('{"device": "cpu", "swept": [], "results": []}')
    assert settings({}, str(tmp_path / 'old.json'), lambda args: args) == [({}, [])]
    import bench
    from configurator import configure
    for key, values in (('device', ['cpu', 'meta']), ('dtype', ['float32', 'float8'])):
        with pytest.raises(SystemExit, match=values[1]):  # refused before the first setting is timed
            settings({key: values}, '', lambda args: (cfg := configure(bench.defaults, args, bench.RANGES,
                                                                       verbose=False)).device == 'auto' or
                     bench.device_type_of(cfg.device))


def test_two_sweeps_adding_rows_to_one_file_at_once_lose_none(tmp_path):
    # nanogpt.sweep.add_result reads and replaces the file under a lock: no row of either sweep is lost
    import threading

    from nanogpt.sweep import add_result
    out = str(tmp_path / 'bench.json')

    def sweep(name):
        for i in range(15):
            add_result(out, 'cpu', {'batch_size': []}, {'batch_size': f'{name}{i}', 'ms': 1.0})
    threads = [threading.Thread(target=sweep, args=(name,)) for name in 'ab']
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [r['batch_size'] for r in json.load(open(out))['results']]
    assert sorted(rows) == sorted(f'{n}{i}' for n in 'ab' for i in range(15))


def test_a_sweep_of_a_key_checked_with_another_takes_its_first_value_not_the_default(tmp_path):
    # n_embd=32 with the default n_head=12 would be refused before any setting ran
    proc = run_script('bench.py', '--device=cpu', '--compile=False', '--n_layer=1', '--n_embd=32', '--n_head=2,4',
                      '--block_size=16', '--batch_size=2', '--burnin_steps=1', '--benchmark_steps=1',
                      '--real_data=False')
    assert proc.stdout.count('ms/iter,') == 2
