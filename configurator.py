"""
nanoGPT's configurator, with checks. A script declares its defaults as plain globals and calls

    config = configure(defaults, sys.argv[1:])

where arguments are either config files or --key=value overrides, e.g.

    python train.py config/override_file.py --batch_size=32

The config keys are the script's public lowercase globals bound to an int, float, bool, str or None; module
constants written in capitals (URL, N_VAL, REPO_DIR) are not config keys.

Config files are plain Python, exec'd over the defaults; --key=value values are parsed with ast.literal_eval
(and kept as strings when that fails). Unlike nanoGPT's exec'd configurator, an unknown key, in a file or on the
command line, stops with an error naming the closest known key, and a value of the wrong type is an error
(an int where a float is expected is fine). Every resolved override is printed.

A config file may compute its values with helper names, as long as they start with an underscore (or are
modules, functions or classes, e.g. `import math`); every other name it binds must be a config key:

    _tokens_per_step = 8 * 1024 * 64
    gradient_accumulation_steps = _tokens_per_step // (batch_size * block_size)
"""

import ast
import difflib
import errno
import os
import sys
import types
from types import SimpleNamespace

CONFIG_TYPES = (int, float, bool, str)


def config_defaults(namespace: dict) -> dict:
    """The config keys of a script's globals: the public names bound to an int, float, bool, str or None,
    less the capitalised module constants."""
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and not k.isupper() and (v is None or isinstance(v, CONFIG_TYPES))}


def _unknown_key(key: str, known) -> SystemExit:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return SystemExit(f"error: unknown config key {key!r}: {hint}")


def _check_type(key: str, value, default, source: str):
    """value converted to the type of default, or SystemExit when it does not fit."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise SystemExit(f"error: {source}: {key} must be a {type(default).__name__} "
                         f"(default {default!r}), got {value!r} of type {type(value).__name__}")
    return value


def _one_line_errors(exc_type, exc, tb):
    """sys.excepthook of the scripts: an error the scripts did not foresee still ends in one line, not a traceback
    (NANOGPT_DEBUG=1 shows it)."""
    if issubclass(exc_type, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        message = f"the disk is full{f' writing {exc.filename}' if exc.filename else ''}: free some space and run again"
    elif isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}{f': {exc.filename}' if exc.filename else ''}"
    elif isinstance(exc, UnicodeDecodeError):
        message = f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}): convert it to UTF-8"
    elif isinstance(exc, ModuleNotFoundError) and exc.name:
        message = f"the {exc.name} package is not installed: pip install {exc.name.split('.')[0]}"
    else:
        message = f"{exc_type.__name__}: {exc}"
    print(f"error: {message} (NANOGPT_DEBUG=1 shows the traceback)", file=sys.stderr)
    sys.exit(1)


def one_line_errors():
    """From now on an uncaught exception ends the script with one line on stderr (unless NANOGPT_DEBUG is set).
    configure() calls it; the prepare scripts, which take argparse arguments, call it themselves."""
    if not os.environ.get('NANOGPT_DEBUG'):
        sys.excepthook = _one_line_errors


def configure(defaults: dict, argv: list[str], verbose: bool | None = None) -> SimpleNamespace:
    """Apply config files and --key=value arguments to defaults; return the resolved config, checked.
    A script calls it first: from then on an uncaught exception ends the script with one line on stderr."""
    one_line_errors()
    if verbose is None:
        verbose = int(os.environ.get('RANK', 0)) == 0  # under torchrun only rank 0 prints
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith('--'):
            # a config file, exec'd over the current values
            if not os.path.isfile(arg):
                raise SystemExit(f"error: config file {arg!r} not found (arguments are config files or --key=value)")
            with open(arg) as f:
                source = f.read()
            if verbose:
                print(f"Overriding config with {arg}:\n{source}")
            namespace = dict(config)
            try:
                exec(compile(source, arg, 'exec'), namespace)
            except SyntaxError as e:
                raise SystemExit(f"error: config file {arg}, line {e.lineno}: {e.msg}: fix the Python there") from None
            except Exception as e:
                raise SystemExit(f"error: config file {arg} failed when run ({type(e).__name__}: {e}): "
                                 f"fix the Python there") from None
            for key, value in namespace.items():
                if key.startswith('_') or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                    continue  # imports and helpers inside the config file
                if key not in defaults:
                    raise _unknown_key(key, defaults)
                config[key] = _check_type(key, value, defaults[key], arg)
        else:
            # --key=value
            if '=' not in arg:
                raise SystemExit(f"error: {arg!r}: overrides are written --key=value")
            key, raw = arg[2:].split('=', 1)
            if key not in defaults:
                raise _unknown_key(key, defaults)
            default = defaults[key]
            try:
                value = ast.literal_eval(raw)
            except (SyntaxError, ValueError):
                value = raw  # a bare string, e.g. --device=cuda
            if isinstance(default, str) and not isinstance(value, str):
                value = raw  # --wandb_run_name=2024 stays a string
            config[key] = _check_type(key, value, default, arg)
            if verbose:
                print(f"Overriding: {key} = {config[key]!r}")
    check_ranges(config)
    return SimpleNamespace(**config)


# The ranges of the config keys the scripts share, checked for whichever of them a script has: a value outside
# them would train on nothing, on NaN, or sample nonsense, and still exit 0
POSITIVE = ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval', 'log_interval', 'eval_iters',
            'n_layer', 'n_head', 'n_embd', 'vocab_size', 'num_samples', 'benchmark_steps')
NON_NEGATIVE = ('learning_rate', 'max_iters', 'warmup_iters', 'lr_decay_iters', 'min_lr', 'weight_decay', 'grad_clip',
                'temperature', 'max_new_tokens', 'burnin_steps', 'hellaswag_interval', 'hellaswag_limit', 'limit')


def check_ranges(config: dict):
    """SystemExit naming the first key whose value is out of range, or two keys that do not fit together."""
    def fail(what: str, fix: str):
        raise SystemExit(f"error: {what}: {fix}")
    for key in POSITIVE:
        if config.get(key) is not None and config[key] <= 0:
            fail(f"{key}={config[key]!r}", f"{key} must be greater than 0")
    for key in NON_NEGATIVE:
        if config.get(key) is not None and config[key] < 0:
            fail(f"{key}={config[key]!r}", f"{key} must be 0 or more")
    if 'dropout' in config and not 0.0 <= config['dropout'] < 1.0:
        fail(f"dropout={config['dropout']!r}", "dropout is a probability in [0, 1)")
    for key in ('beta1', 'beta2'):
        if key in config and not 0.0 <= config[key] < 1.0:
            fail(f"{key}={config[key]!r}", f"{key} must be in [0, 1)")
    if config.get('top_k') is not None and config['top_k'] <= 0:
        fail(f"top_k={config['top_k']!r}", "top_k must be 1 or more, or None for all tokens")
    if config.get('top_p') is not None and not 0.0 < config['top_p'] <= 1.0:
        fail(f"top_p={config['top_p']!r}", "top_p must be in (0, 1], or None for all tokens")
    if config.get('n_embd') and config.get('n_head') and config['n_embd'] % config['n_head']:
        fail(f"n_embd={config['n_embd']} is not divisible by n_head={config['n_head']}",
             "each head gets n_embd / n_head dimensions; change one of them")
    if config.get('decay_lr') and config['min_lr'] > config['learning_rate']:
        fail(f"min_lr={config['min_lr']} is above learning_rate={config['learning_rate']}",
             "the schedule decays from learning_rate down to min_lr")
