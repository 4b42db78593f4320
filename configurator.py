"""
nanoGPT's configurator, with checks. A script declares its defaults as plain globals, the ranges of its keys beside
them, and calls `config = configure(defaults, sys.argv[1:], RANGES)`; arguments are config files or --key=value:

    python train.py config/override_file.py --batch_size=32

Config keys are a script's public lowercase globals bound to an int, float, bool, str or None (capitalised module
constants are not). Config files are plain Python exec'd over the defaults; a name the file also reads (or one
starting with an underscore, a module, a function) is a helper, not a key. --key=value is parsed with literal_eval
(a string when that fails). An unknown key stops with the closest known one named, as does a wrong type or range.
"""

import ast
import difflib
import os
import re
import sys
import types

from nanogpt.ranges import check_ranges


def config_defaults(namespace: dict) -> dict:
    """The config keys of a script's globals: the public names bound to an int, float, bool, str or None,
    less the capitalised module constants."""
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and not k.isupper() and (v is None or isinstance(v, (int, float, bool, str)))}


def _unknown_key(key: str, known) -> SystemExit:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return SystemExit(f"error: unknown config key {key!r}: {hint}")


def _check_type(key: str, value, default, source: str, nullable: set):
    """value as default's type, else SystemExit. None fits a None default, or a range ending in 'or None' (top_k)."""
    if default is None or (value is None and key in nullable):
        return value
    if value is None:
        raise SystemExit(f"error: {source}: {key} must be a {type(default).__name__} (default {default!r}), got None:"
                         f" give it a value")
    if isinstance(default, float) and type(value) in (int, float):
        return float(value)  # an int where a float is expected is fine
    if type(value) is not type(default):  # exactly: a bool is no int here, nor an int a bool
        raise SystemExit(f"error: {source}: {key} must be a {type(default).__name__} "
                         f"(default {default!r}), got {value!r} of type {type(value).__name__}")
    return value


def _print_help(defaults: dict):
    """The script's docstring, then every key with its default and the comment beside it in the script."""
    main = sys.modules['__main__']
    with open(main.__file__, encoding='utf-8') as f:
        comments = dict(re.findall(r'^(\w+) = .*?  # (.*)$', f.read(), re.M))
    print((main.__doc__ or '').strip() + '\n\nconfig keys (config/file.py or --key=value):')
    for key, value in defaults.items():
        print(f"  --{key}={value!r}" + (f"  # {comments[key]}" if key in comments else ''))
    sys.exit(0)


def configure(defaults: dict, argv: list[str], ranges: dict | None = None, verbose: bool | None = None):
    """Apply config files and --key=value arguments to defaults; return the resolved config, checked."""
    if '--help' in argv or '-h' in argv:
        _print_help(defaults)
    if verbose is None:
        verbose = int(os.environ.get('RANK', 0)) == 0  # under torchrun only rank 0 prints
    config = dict(defaults)
    echo = []  # what was overridden, printed once every argument is checked: a typo's error comes first, alone
    nullable = {k for k, spec in (ranges or {}).items() if isinstance(spec, str) and spec.endswith(' or None')}
    for arg in argv:
        if not arg.startswith('--'):
            # a config file, exec'd over the current values
            if not os.path.isfile(arg):
                raise SystemExit(f"error: config file {arg!r} not found (arguments are config files or --key=value)")
            namespace = dict(config)
            try:
                with open(arg, encoding='utf-8') as f:
                    source = f.read()
                tree = ast.parse(source, arg)
                exec(compile(tree, arg, 'exec'), namespace)
            except SyntaxError as e:
                raise SystemExit(f"error: config file {arg}, line {e.lineno}: {e.msg}: fix the Python there") from None
            except (Exception, SystemExit) as e:  # exit() too: a config file sets keys, it does not end the run
                what = 'called exit()' if isinstance(e, SystemExit) else f'failed when run ({type(e).__name__}: {e})'
                raise SystemExit(f"error: config file {arg} {what}: fix the Python there") from None
            echo.append(f"Overriding config with {arg}:\n{source}")
            # a name the file reads is a helper (tokens = 2**19; batch_size = tokens // 1024), as nanoGPT allows
            helpers = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            helpers -= set(defaults)
            for name in helpers:  # one letter off a key is a typo the file also reads, not a helper
                if name in namespace and difflib.get_close_matches(name, list(defaults), n=1, cutoff=0.85):
                    raise _unknown_key(name, defaults)
            for key, value in namespace.items():
                if key.startswith('_') or key in helpers or isinstance(value, types.ModuleType) or callable(value):
                    continue  # helpers, imports and functions inside the config file (import math)
                if key not in defaults:
                    raise _unknown_key(key, defaults)
                config[key] = _check_type(key, value, defaults[key], arg, nullable)
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
            config[key] = _check_type(key, value, default, arg, nullable)
            echo.append(f"Overriding: {key} = {config[key]!r}")
    check_ranges(config, ranges or {})
    if verbose and echo:
        print('\n'.join(echo))
    return types.SimpleNamespace(**config)
