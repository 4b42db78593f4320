import re

from conftest import run_script

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
    proc = run_script('bench.py', *SMALL, f'--dataset={char_data}', '--vocab_size=8', check=False)
    assert proc.returncode != 0 and "outside the model's vocabulary of 8" in proc.stderr


def test_bench_profile(tmp_path):
    proc = run_script('bench.py', *SMALL, '--real_data=False', '--profile=True', cwd=tmp_path)
    assert 'aten::' in proc.stdout and (tmp_path / 'bench_log').is_dir()
