"""
The values a config key may take. Its type is its default's (check_type, as each value is applied); its range is
declared beside a script's defaults (RANGES = dict(batch_size='> 0', ...)) and checked by the configurator once
every config file and --key=value is applied, before any work: a range is '> 0', '>= 0', an interval such as
'[0, 1)' (' or None' after it lets a key be None), or a tuple of the allowed values. Keys that must fit together
are checked here too, wherever a script has both.
"""


def check_type(key: str, value, default, source: str, nullable: bool = False):
    """value as default's type, else SystemExit naming source. None fits a None default, or a key whose range ends
    in 'or None' (nullable: top_k); an int fits a float; a list default takes a list of strings (files, folders)."""
    if default is None or (value is None and nullable):
        return value
    if value is None:
        raise SystemExit(f"error: {source}: {key} must be a {type(default).__name__} (default {default!r}), got None:"
                         f" give it a value")
    if isinstance(default, float) and type(value) in (int, float):
        return float(value)
    if isinstance(default, list) and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    if type(value) is not type(default) or isinstance(default, list):  # exactly: a bool is no int, an int no bool
        kind = 'list of strings' if isinstance(default, list) else type(default).__name__
        raise SystemExit(f"error: {source}: {key} must be a {kind} (default {default!r}), got {value!r} of type "
                         f"{type(value).__name__}")
    return value


def check_ranges(config: dict, ranges: dict):
    """SystemExit naming the first key whose value is outside its range, or two keys that do not fit together.
    A range is '> 0', '>= 0', an interval such as '[0, 1)', or a tuple of the allowed values; None passes (the
    types allow it only where the default is None or the range ends in ' or None')."""
    for key, spec in ranges.items():
        value = config.get(key)
        spec = spec.removesuffix(' or None') if isinstance(spec, str) else spec
        if isinstance(spec, tuple) and value not in spec:
            raise SystemExit(f"error: {key}={value!r}: use {' or '.join(map(repr, spec))}")
        if value is None or isinstance(spec, tuple):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):  # a None default takes any type: not here
            raise SystemExit(f"error: {key}={value!r}: {key} must be a number")
        if value != value or value in (float('inf'), float('-inf')):  # 1e309 is inf: no range holds it
            raise SystemExit(f"error: {key}={value!r}: {key} must be a finite number")
        if spec.startswith('>'):  # '> 0' is the interval (0, inf), '>= 0' is [0, inf)
            spec = f"{'[' if spec.startswith('>=') else '('}{spec.split()[1]}, inf)"
        low, high = (float(x) for x in spec[1:-1].split(','))
        above = low < value if spec[0] == '(' else low <= value
        below = value < high if spec[-1] == ')' else value <= high
        if not (above and below):
            fix = f"greater than {low:g}" if spec[0] == '(' else f"{low:g} or more"
            raise SystemExit(f"error: {key}={value!r}: {key} must be {fix if high == float('inf') else 'in ' + spec}")
    # two keys that must fit together, wherever a script has both
    if config.get('n_embd') and config.get('n_head') and config['n_embd'] % config['n_head']:
        raise SystemExit(f"error: n_embd={config['n_embd']} is not divisible by n_head={config['n_head']}: each "
                         f"head gets n_embd / n_head dimensions; change one of them")
    if config.get('optimizer') == 'muon' and config.get('data_parallel') == 'fsdp':
        raise SystemExit("error: optimizer='muon' does not work with data_parallel='fsdp': Muon orthogonalises each "
                         "weight matrix whole, and FSDP keeps only a shard of it on each GPU; use --data_parallel=ddp")
    if config.get('decay_lr') and config['lr_decay_iters'] < config['warmup_iters'] <= config['max_iters']:
        raise SystemExit(f"error: lr_decay_iters={config['lr_decay_iters']} is below warmup_iters="
                         f"{config['warmup_iters']}: at iter {config['warmup_iters']} the rate would fall from its peak "
                         f"to min_lr in one step; make lr_decay_iters the longer")
    if config.get('decay_lr') and config['min_lr'] > config['learning_rate']:
        raise SystemExit(f"error: min_lr={config['min_lr']} is above learning_rate={config['learning_rate']}: the "
                         f"schedule decays from learning_rate down to min_lr")
