"""
nanoGPT's configurator, with checks. A script declares its defaults as plain globals, the ranges of its keys beside
them, and calls `config = configure(defaults, sys.argv[1:], RANGES)`; arguments are config files or --key=value:

    python train.py config/override_file.py --batch_size=32

Config keys are a script's public lowercase globals bound to an int, float, bool, str, None or a list of strings
(capitalised module constants are not). Config files are plain Python exec'd over the defaults; a name the file also
reads (or one starting with an underscore, a module, a function) is a helper, not a key. --key=value (or --key value)
is parsed with literal_eval (a string when that fails); a list key takes every value up to the next --key
(--input a.jsonl b.jsonl). A script without config files names the list key its bare arguments fill (plot.py's
out_dirs). An unknown key stops with the closest known one named, as does a wrong type or range.
"""

import ast
import difflib
import os
import re
import sys
import types

from nanogpt.ranges import check_ranges, check_type


def config_defaults(namespace: dict) -> dict:
    """The config keys of a script's globals: the public names bound to an int, float, bool, str, None or a list of
    strings, less the capitalised module constants."""
    def plain(v):
        listed = type(v) is list and all(isinstance(s, str) for s in v)
        return v is None or isinstance(v, (int, float, bool, str)) or listed
    return {k: v for k, v in namespace.items() if not k.startswith('_') and not k.isupper() and plain(v)}


def _unknown_key(key: str, known, source: str = '') -> SystemExit:
    lower = {k.lower(): k for k in known}  # BATCH_SIZE: case first, then spelling
    close = [lower[key.lower()]] if key.lower() in lower else difflib.get_close_matches(key, list(known), n=1,
                                                                                          cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return SystemExit(f"error: unknown config key {key!r}{f' in {source}' if source else ''}: {hint}")


def _print_help(defaults: dict):
    """The script's docstring, then every key with its default and the comment beside it in the script."""
    main = sys.modules['__main__']
    with open(main.__file__, encoding='utf-8') as f:
        comments = dict(re.findall(r'^(\w+) = .*?  # (.*)$', f.read(), re.M))
    print((main.__doc__ or '').strip() + '\n\nconfig keys (config/file.py or --key=value):')
    for key, value in defaults.items():
        print(f"  --{key}={value!r}" + (f"  # {comments[key]}" if key in comments else ''))
    sys.exit(0)


def _parse(raws: list[str], default):
    """The value of --key=raw or --key raw [raw ...] as the default's type would have it."""
    if isinstance(default, list):  # files or folders: each as typed, or one Python list --input="['a', 'b']"
        try:
            return ast.literal_eval(raws[0]) if len(raws) == 1 and raws[0].startswith('[') else raws
        except (SyntaxError, ValueError):
            return raws  # a file whose name starts with [
    try:
        value = ast.literal_eval(raws[0])
    except (SyntaxError, ValueError):
        return raws[0]  # a bare string, e.g. --device=cuda
    return raws[0] if isinstance(default, str) and not isinstance(value, str) else value  # --wandb_run_name=2024


def _bound_names(tree) -> set:
    """The names a config file binds itself: assigned (loops and unpacking too), defined, imported by name."""
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    imports = [a for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names]
    return names | {(a.asname or a.name).split('.')[0] for a in imports if a.name != '*'}


def configure(defaults: dict, argv: list[str], ranges: dict | None = None, verbose: bool | None = None,
              positional: str | None = None):
    """Apply config files and --key=value arguments to defaults; return the resolved config, checked. A script
    that takes no config files names in positional the list key its bare arguments go to."""
    if verbose is None:
        verbose = os.environ.get('RANK', '0') == '0'  # under torchrun only rank 0 prints
    config = dict(defaults)
    echo = []  # what was overridden, printed once every argument is checked: a typo's error comes first, alone
    nullable = {k for k, spec in (ranges or {}).items() if isinstance(spec, str) and spec.endswith(' or None')}
    args, bare, listed = list(argv), [], set()
    while args:
        arg = args.pop(0)
        if arg in ('--help', '-h'):  # where it is an argument, not a value (--start -h)
            _print_help(defaults)
        if not arg.startswith('--') and positional:
            bare.append(arg)
        elif not arg.startswith('--'):
            # a config file, exec'd over the current values
            if not arg.endswith('.py') or not os.path.isfile(arg):  # a data file passed bare is not run as Python
                what = f"{arg!r} is not a config file" if not arg.endswith('.py') or os.path.exists(arg) else \
                    f"config file {arg!r} not found"
                raise SystemExit(f"error: {what} (arguments are config files, config/name.py, or --key=value)")
            namespace = dict(config, __file__=arg)  # __file__, as a nanoGPT config file exec'd in train.py sees one
            try:
                with open(arg, encoding='utf-8-sig') as f:  # a byte order mark, as Python reads it
                    source = f.read()
                tree = ast.parse(source, arg)
                exec(compile(tree, arg, 'exec'), namespace)
            except SyntaxError as e:
                raise SystemExit(f"error: config file {arg}, line {e.lineno}: {e.msg}: fix the Python there") from None
            except UnicodeDecodeError as e:  # the Python may be fine: its encoding is not
                raise SystemExit(f"error: config file {arg} is not UTF-8 text ({e.reason} at byte {e.start}): convert "
                                 f"it, e.g. with iconv -t utf-8") from None
            except BaseException as e:  # exit() too, or a KeyboardInterrupt: a config file sets keys, it ends no run
                what = 'called exit()' if isinstance(e, SystemExit) else f'failed when run ({type(e).__name__}: {e})'
                raise SystemExit(f"error: config file {arg} {what}: fix the Python there") from None
            echo.append(f"Overriding config with {arg}:\n{source}")
            # a name the file reads is a helper (tokens = 2**19; batch_size = tokens // 1024), as nanoGPT allows
            helpers = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            helpers |= {n.id for loop in ast.walk(tree) if isinstance(loop, (ast.For, ast.comprehension))
                        for n in ast.walk(loop.target) if isinstance(n, ast.Name)}  # for i in ...: a loop's names
            helpers |= {k for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.names[0].name == '*'
                        for k in dir(sys.modules.get(n.module))}  # from math import *: pi is no key
            helpers -= set(defaults)
            bound = _bound_names(tree)  # what the file sets itself: a key set any other way is refused below
            for name in helpers & bound:  # one letter off a key is a typo the file also reads, not a helper
                if difflib.get_close_matches(name, list(defaults), n=1, cutoff=0.85):
                    raise _unknown_key(name, defaults, arg)
            for key, value in namespace.items():
                if key in defaults and key in bound:  # a function or a lambda bound to a key is refused as a value
                    config[key] = check_type(key, value, defaults[key], arg, key in nullable)
                elif key in defaults and value is not config[key] and value != config[key]:
                    raise SystemExit(f"error: config file {arg} sets {key} other than by assigning it (a star "
                                     f"import?): assign the keys it sets by name")
                elif not (key in defaults or key.startswith('_') or key in helpers or key not in bound
                          or isinstance(value, types.ModuleType) or callable(value)):
                    raise _unknown_key(key, defaults, arg)  # (helpers, imports and functions are the file's own)
        else:
            # --key=value, or --key value (a list key: --key value value ...)
            key, eq, raw = arg[2:].partition('=')
            if key not in defaults:
                raise _unknown_key(key, defaults)
            raws = [raw] if eq else []
            while not eq and args and not args[0].startswith('--') and (not raws or isinstance(defaults[key], list)):
                raws.append(args.pop(0))
            if not raws:
                raise SystemExit(f"error: {arg} needs a value: --{key}=VALUE (default {defaults[key]!r})")
            value = check_type(key, _parse(raws, defaults[key]), defaults[key], arg, key in nullable)
            # a list key given again adds to it (--input a --input b), as any other replaces
            config[key] = config[key] + value if isinstance(value, list) and key in listed else value
            listed.add(key)
            echo.append(f"Overriding: {key} = {config[key]!r}")
    if bare:  # after those given as --key a b, if any
        config[positional] = config[positional] + bare
    check_ranges(config, ranges or {})
    if verbose and echo:
        print('\n'.join(echo))
    return types.SimpleNamespace(**config)
