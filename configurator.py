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
import os
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


def _check_type(key: str, value, default, where: str):
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
        raise SystemExit(f"error: {where}: {key} must be a {type(default).__name__} "
                         f"(default {default!r}), got {value!r} of type {type(value).__name__}")
    return value


def configure(defaults: dict, argv: list[str], verbose: bool | None = None) -> SimpleNamespace:
    """Apply config files and --key=value arguments to defaults; return the resolved config."""
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
            exec(compile(source, arg, 'exec'), namespace)
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
    return SimpleNamespace(**config)
