import pytest

from configurator import config_defaults, configure

DEFAULTS = config_defaults(dict(batch_size=12, learning_rate=6e-4, compile=True, device='cuda', top_k=None,
                                _private=1, helper=print))


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


def test_unknown_key_names_the_closest(tmp_path):
    with pytest.raises(SystemExit, match="unknown config key 'batchsize': did you mean 'batch_size'"):
        configure(DEFAULTS, ['--batchsize=3'], verbose=False)
    path = tmp_path / 'cfg.py'
    path.write_text("learning_rat = 1e-3\n")
    with pytest.raises(SystemExit, match="'learning_rat': did you mean 'learning_rate'"):
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
    path = tmp_path / 'cfg.py'
    path.write_text("device = 3\n")
    with pytest.raises(SystemExit, match='device must be a str'):
        configure(DEFAULTS, [str(path)], verbose=False)


def test_bad_arguments():
    with pytest.raises(SystemExit, match='not found'):
        configure(DEFAULTS, ['config/nope.py'], verbose=False)
    with pytest.raises(SystemExit, match='--key=value'):
        configure(DEFAULTS, ['--batch_size'], verbose=False)
