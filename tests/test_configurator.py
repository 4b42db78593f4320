"""
configurator.py: defaults are the plain globals, command-line and config-file overrides, the closest key named for
a typo, wrong types refused, module constants not keys, and --help listing every key with its default and comment.
"""
import re

import pytest

from configurator import config_defaults, configure

DEFAULTS = config_defaults(dict(batch_size=12, learning_rate=6e-4, compile=True, device='cuda', top_k=None,
                                _private=1, helper=print, URL='https://example.com', N_VAL=10042))


def test_defaults_are_the_plain_values():
    assert DEFAULTS == dict(batch_size=12, learning_rate=6e-4, compile=True, device='cuda', top_k=None)


def test_command_line_overrides(capsys):
    cfg = configure(DEFAULTS, ['--batch_size=32', '--learning_rate=1', '--compile=False', '--device=cpu',
                               '--top_k=5'], verbose=True)
    assert cfg.batch_size == 32 and cfg.compile is False and cfg.device == 'cpu' and cfg.top_k == 5
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)  # an int is fine for a float
    assert "Overriding: batch_size = 32" in capsys.readouterr().out
    # a string key keeps what was typed, even when it parses as a number
    assert configure(DEFAULTS, ['--device=123'], verbose=False).device == '123'


def test_config_file(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text("import math\nbatch_size = 64\nlearning_rate = 3e-4 * math.sqrt(4)\n_scratch = 1\n")
    cfg = configure(DEFAULTS, [str(path), '--batch_size=8'], verbose=False)
    assert cfg.batch_size == 8 and cfg.learning_rate == pytest.approx(6e-4)


def test_a_config_files_helper_variables_work_as_in_nanogpt(tmp_path):
    # a name the file reads is a helper; one it only sets must be a key (a typo still stops)
    path = tmp_path / 'cfg.py'
    path.write_text("tokens_per_step = 6 * 64\nbatch_size = 6\nlearning_rate = 1e-4 * tokens_per_step / batch_size\n"
                    "device = 'cpu' if batch_size < 8 else 'cuda'\n")
    cfg = configure(DEFAULTS, [str(path)], verbose=False)
    assert cfg.batch_size == 6 and cfg.learning_rate == pytest.approx(64e-4) and cfg.device == 'cpu'
    assert not hasattr(cfg, 'tokens_per_step')
    path.write_text("tokens_per_step = 384\nbatchsize = tokens_per_step // 64\n")  # read nowhere: a typo
    with pytest.raises(SystemExit, match="unknown config key 'batchsize'( in .*)?: did you mean 'batch_size'"):
        configure(DEFAULTS, [str(path)], verbose=False)
    path.write_text("lerning_rate = 1e-2\nbatch_size = int(lerning_rate * 1000)\n")  # read, but a key's typo
    with pytest.raises(SystemExit, match="unknown config key 'lerning_rate'( in .*)?: did you mean 'learning_rate'"):
        configure(DEFAULTS, [str(path)], verbose=False)


@pytest.mark.parametrize('ending', ['exit()', 'import sys; sys.exit(0)', 'raise SystemExit', 'quit(3)'])
def test_a_config_file_that_exits_stops_the_run_with_a_line_naming_it(tmp_path, ending):
    path = tmp_path / 'cfg.py'
    path.write_text(f"batch_size = 64\n{ending}\n")
    with pytest.raises(SystemExit, match=rf"^error: config file {path} called exit\(\): fix the Python there$"):
        configure(DEFAULTS, [str(path)], verbose=False)


def test_unknown_key_names_the_closest(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown config key 'batchsize'( in .*)?: did you mean 'batch_size'"):
        configure(DEFAULTS, ['--batchsize=3'], verbose=False)
    # the error alone, not after the echo of what was overridden before the typo (a config file's 50 lines)
    (tmp_path / 'ok.py').write_text("batch_size = 64\n")
    with pytest.raises(SystemExit, match="did you mean 'batch_size'"):
        configure(DEFAULTS, [str(tmp_path / 'ok.py'), '--device=cpu', '--batchsize=3'], verbose=True)
    assert capsys.readouterr().out == ''
    path = tmp_path / 'cfg.py'
    path.write_text("learning_rat = 1e-3\n")
    with pytest.raises(SystemExit, match="'learning_rat'( in .*)?: did you mean 'learning_rate'"):
        configure(DEFAULTS, [str(path)], verbose=False)
    with pytest.raises(SystemExit, match="known keys"):
        configure(DEFAULTS, ['--zzz=1'], verbose=False)


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match='batch_size must be a int'):
        configure(DEFAULTS, ['--batch_size=1.5'], verbose=False)
    with pytest.raises(SystemExit, match='compile must be a bool'):
        configure(DEFAULTS, ['--compile=1'], verbose=False)
    with pytest.raises(SystemExit, match='learning_rate must be a float'):
        configure(DEFAULTS, ['--learning_rate=fast'], verbose=False)
    with pytest.raises(SystemExit, match='learning_rate must be a float'):  # a bool is an int to Python, not a float
        configure(DEFAULTS, ['--learning_rate=True'], verbose=False)
    path = tmp_path / 'cfg.py'
    path.write_text("device = 3\n")
    with pytest.raises(SystemExit, match='device must be a str'):
        configure(DEFAULTS, [str(path)], verbose=False)


def test_bad_arguments():
    with pytest.raises(SystemExit, match='not found'):
        configure(DEFAULTS, ['config/nope.py'], verbose=False)
    with pytest.raises(SystemExit, match=r"'README.md' is not a config file \(arguments are config files"):
        configure(DEFAULTS, ['README.md'], verbose=False)  # a file that is not Python is never run as Python
    with pytest.raises(SystemExit, match=r'^error: --batch_size needs a value: --batch_size=VALUE \(default 12\)$'):
        configure(DEFAULTS, ['--batch_size'], verbose=False)
    with pytest.raises(SystemExit, match='--compile needs a value'):
        configure(DEFAULTS, ['--compile', '--batch_size=3'], verbose=False)


@pytest.mark.parametrize('value', ['1e309', '-1e400'])
def test_a_number_no_range_holds_is_refused_as_not_finite(value):
    with pytest.raises(SystemExit, match=r'learning_rate must be a finite number$'):
        configure(DEFAULTS, [f'--learning_rate={value}'], {'learning_rate': '>= 0'}, verbose=False)


def test_a_key_with_a_numeric_range_takes_only_numbers():
    # a None default takes any type (peak_flops=None, or a number): its range says it is a number
    defaults = dict(peak_flops=None)
    for value in ('abc', 'True', "'3e14'"):
        with pytest.raises(SystemExit, match=r'peak_flops=.*: peak_flops must be a number$'):
            configure(defaults, [f'--peak_flops={value}'], {'peak_flops': '> 0 or None'}, verbose=False)
    assert configure(defaults, ['--peak_flops=3e14'], {'peak_flops': '> 0 or None'}, verbose=False).peak_flops == 3e14


@pytest.mark.parametrize('body, says', [('raise KeyboardInterrupt', 'failed when run (KeyboardInterrupt'),
                                        ('import os; os.kill(os.getpid(), 0)\nbatch_size = "8"', 'must be a int')])
def test_a_config_file_that_interrupts_or_sets_a_wrong_type_names_itself(tmp_path, body, says):
    (tmp_path / 'cfg.py').write_text(body + '\n')
    with pytest.raises(SystemExit, match=re.escape(says)) as e:
        configure(DEFAULTS, [str(tmp_path / 'cfg.py')], verbose=False)
    assert str(tmp_path / 'cfg.py') in str(e.value)


def test_a_config_file_may_start_with_a_byte_order_mark(tmp_path):
    (tmp_path / 'cfg.py').write_bytes('\ufeffbatch_size = 7\n'.encode('utf-8'))  # as Python itself runs it
    assert configure(DEFAULTS, [str(tmp_path / 'cfg.py')], verbose=False).batch_size == 7


def test_a_folder_named_like_a_config_file_is_not_one(tmp_path):
    (tmp_path / 'x.py').mkdir()
    with pytest.raises(SystemExit, match=r"'.*x.py' is not a config file"):
        configure(DEFAULTS, [str(tmp_path / 'x.py')], verbose=False)


def test_key_space_value_and_list_keys(tmp_path):
    # --key value as argparse users type it; a list key takes every value up to the next --key
    defaults = dict(DEFAULTS, input=[], out_dir='out')
    cfg = configure(defaults, ['--batch_size', '32', '--input', 'a.jsonl', 'b c.jsonl', '--device', 'cpu'],
                    verbose=False)
    assert cfg.batch_size == 32 and cfg.input == ['a.jsonl', 'b c.jsonl'] and cfg.device == 'cpu'
    assert configure(defaults, ['--input=a.jsonl'], verbose=False).input == ['a.jsonl']
    assert configure(defaults, ['--input=["a", "b"]'], verbose=False).input == ['a', 'b']
    (tmp_path / 'cfg.py').write_text("input = ['x.txt']\nbatch_size = 4\n")
    cfg = configure(defaults, ['--input', 'a.jsonl', str(tmp_path / 'cfg.py')], verbose=False)
    assert cfg.input == ['a.jsonl', str(tmp_path / 'cfg.py')]  # a list key takes what follows it, a file too
    assert configure(defaults, [str(tmp_path / 'cfg.py')], verbose=False).input == ['x.txt']
    (tmp_path / 'bad.py').write_text("input = 'x.txt'\n")
    with pytest.raises(SystemExit, match=r"bad.py: input must be a list of strings \(default \[\]\), got 'x.txt'"):
        configure(defaults, [str(tmp_path / 'bad.py')], verbose=False)
    with pytest.raises(SystemExit, match=r"input must be a list of strings .* got \[1, 2\]"):
        configure(defaults, ['--input=[1, 2]'], verbose=False)
    # given again on the command line, a list key adds to it (half the documents were dropped); a file's is replaced
    cfg = configure(defaults, [str(tmp_path / 'cfg.py'), '--input', 'a', '--input=b', '--batch_size=1', '--input', 'c'],
                    verbose=False)
    assert cfg.input == ['a', 'b', 'c']


def test_a_script_without_config_files_takes_its_bare_arguments_as_a_list_key():
    defaults = dict(out_dirs=[], output='')
    cfg = configure(defaults, ['out-a', '--output=x.png', 'out-b'], verbose=False, positional='out_dirs')
    assert cfg.out_dirs == ['out-a', 'out-b'] and cfg.output == 'x.png'
    cfg = configure(defaults, ['--out_dirs', 'a', 'b', '--output', 'x.png', 'c'], verbose=False, positional='out_dirs')
    assert cfg.out_dirs == ['a', 'b', 'c']  # bare ones join those given with the key
    assert configure(defaults, ['--output', 'x.png'], verbose=False, positional='out_dirs').out_dirs == []
    with pytest.raises(SystemExit, match="unknown config key 'ouput': did you mean 'output'"):
        configure(defaults, ['out-a', '--ouput=x.png'], verbose=False, positional='out_dirs')


@pytest.mark.parametrize('script, arg', [
    ('hellaswag.py', '--N_VAL=3'),
    ('hellaswag.py', '--URL=http://localhost/x.jsonl'),
    ('hellaswag.py', '--REPO_DIR=/tmp'),
    ('export_hf.py', '--BPE_URL=http://localhost/'),
])
def test_module_constants_are_not_config_keys(script, arg):
    # a script's capitalised constants (URLs, counts, imported paths) cannot be set: they would do nothing
    from conftest import run_script
    proc = run_script(script, arg, check=False)
    assert proc.returncode != 0 and f"unknown config key {arg[2:].split('=')[0]!r}" in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('script, key, comment', [
    ('train.py', "--batch_size=12", 'if gradient_accumulation_steps > 1, this is the micro-batch size'),
    ('sample.py', "--top_p=None", 'nucleus sampling'),
    ('bench.py', "--burnin_steps=10", 'not timed'),
])
def test_help_lists_the_keys_with_defaults_and_comments(script, key, comment):
    from conftest import run_script
    proc = run_script(script, '--help')
    line = next(line for line in proc.stdout.splitlines() if line.strip().startswith(key))
    assert comment in line and 'error' not in proc.stderr


def test_help_is_an_argument_not_a_value_and_a_loops_name_is_a_helper(tmp_path, capsys):
    cfg = configure(dict(DEFAULTS, start='\n'), ['--start', '-h'], verbose=False)  # a prompt, not --help
    assert cfg.start == '-h'
    (tmp_path / 'cfg.py').write_text("for i in range(2):\n    pass\nbatch_size = sum(n for n in range(4))\n")
    assert configure(DEFAULTS, [str(tmp_path / 'cfg.py')], verbose=False).batch_size == 6
    (tmp_path / 'other.py').write_text("eval_interval = 250\n")  # another script's key
    with pytest.raises(SystemExit, match=r"unknown config key 'eval_interval' in .*other.py: "):
        configure(DEFAULTS, [str(tmp_path / 'other.py')], verbose=False)


def test_a_star_imports_names_are_helpers(tmp_path):
    (tmp_path / 'cfg.py').write_text("from math import *\nlearning_rate = 1e-3 * pi\n")
    assert configure(DEFAULTS, [str(tmp_path / 'cfg.py')], verbose=False).learning_rate == pytest.approx(3.14159e-3)


def test_a_star_import_never_sets_keys_and_a_key_is_set_only_to_a_value(tmp_path):
    # the names a star import brings are helpers, not typos of keys (train.py's Dataset is not 'dataset'), and a key
    # it changes is refused; a key the file binds to a function is a wrong type, never skipped as a helper
    import types
    sys_module = types.ModuleType('fake_script')
    sys_module.Batch_size, sys_module.batch_size = 1, 99
    import sys
    sys.modules['fake_script'] = sys_module
    try:
        (tmp_path / 'star.py').write_text("from fake_script import *\nlearning_rate = 1e-3\n")
        with pytest.raises(SystemExit, match=r"star.py sets batch_size other than by assigning it"):
            configure(DEFAULTS, [str(tmp_path / 'star.py')], verbose=False)
        del sys_module.batch_size
        assert configure(DEFAULTS, [str(tmp_path / 'star.py')], verbose=False).learning_rate == 1e-3
    finally:
        del sys.modules['fake_script']
    for body in ("def batch_size():\n    return 8\n", "batch_size = lambda: 100\n"):
        (tmp_path / 'fn.py').write_text(body)
        with pytest.raises(SystemExit, match=r"fn.py: batch_size must be a int"):
            configure(DEFAULTS, [str(tmp_path / 'fn.py')], verbose=False)
    (tmp_path / 'here.py').write_text("import os\ndevice = os.path.basename(__file__)[:-3]\n")  # as in nanoGPT
    assert configure(DEFAULTS, [str(tmp_path / 'here.py')], verbose=False).device == 'here'


def test_a_key_in_other_case_is_named_and_keys_that_must_fit_together_are_refused():
    defaults = dict(batch_size=12, decay_lr=True, warmup_iters=100, lr_decay_iters=5000, max_iters=5000,
                    learning_rate=6e-4, min_lr=6e-5)
    with pytest.raises(SystemExit, match="unknown config key 'BATCH_SIZE': did you mean 'batch_size'"):
        configure(defaults, ['--BATCH_SIZE=4'], verbose=False)
    with pytest.raises(SystemExit, match='at iter 100 the rate would fall from its peak to min_lr in one step'):
        configure(defaults, ['--lr_decay_iters=50'], {}, verbose=False)
    configure(defaults, ['--lr_decay_iters=50', '--max_iters=50'], {}, verbose=False)  # never reached: allowed


def test_a_config_file_not_in_utf8_is_named_as_such_not_as_bad_python(tmp_path):
    (tmp_path / 'latin.py').write_bytes('device = "caf\u00e9"\n'.encode('latin-1'))
    with pytest.raises(SystemExit, match=r"latin.py is not UTF-8 text \(invalid continuation byte at byte 13\): "
                                         r"convert it"):
        configure(DEFAULTS, [str(tmp_path / 'latin.py')], verbose=False)
