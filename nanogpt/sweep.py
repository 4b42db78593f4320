"""
bench.py's sweeps: a key of numbers, true/false or a few names (dtype, device) given as a comma-separated list
(--batch_size=8,16,32) is swept, every combination of the swept values one setting (bench.py checks each before the
first one runs); the results printed as a table and added, row by row, to a JSON file for later comparison. Paths
are never split: a comma is part of a file name.
"""

import itertools
import json
import os

from nanogpt.errors import out_of_memory
from nanogpt.files import atomic_path, check_destination, lock_wait, open_regular, open_source


def split_sweep(argv: list[str], sweepable) -> tuple[list[str], dict]:
    """The arguments less the swept ones, and {key: [value strings]} for each --key=a,b,c of a sweepable key. As for
    any key, the last one given counts: a sweep replaces a value given before it, and a value after it the sweep."""
    fixed, swept = [], {}
    for arg in argv:
        key, _, value = arg[2:].partition('=')
        if arg.startswith('--') and ',' in value and key in sweepable:
            swept[key] = value.split(',')
            fixed = [a for a in fixed if not a.startswith(f'--{key}=')]
        else:
            if arg.startswith('--'):
                swept.pop(key, None)
            fixed.append(arg)
    return fixed, swept


def settings(swept: dict, json_path: str, configure) -> list[tuple[dict, object]]:
    """(setting, its config) for every combination of the swept values, {key: value string}, each checked by
    configure(['--key=value', ...]) before any runs, as is the folder of the results file: a bad one costs no
    results."""
    if json_path and not json_path.endswith('.json'):  # never a name of a dataset or a run's files
        raise SystemExit(f"error: --json={json_path}: the results file's name ends in .json")
    if json_path and os.path.basename(json_path) in ('meta.json', 'config.json'):  # read as a dataset's, a model's
        raise SystemExit(f"error: --json={json_path}: {os.path.basename(json_path)} is the name of a dataset's or a "
                         f"model's file, which would be read as one: choose another name")
    if json_path and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        raise SystemExit(f"error: --json={json_path}: its folder does not exist: create it, or choose another path")
    if json_path:
        check_destination(json_path)
        earlier_results(json_path)  # bench results are added to, anything else (a checkpoint, say) never replaced
    combinations = [dict(zip(swept, values)) for values in itertools.product(*swept.values())]
    return [(c, configure([f'--{k}={v}' for k, v in c.items()])) for c in combinations]


def failed(e: BaseException, swept: dict) -> dict:
    """The result of a setting that failed when it ran (out of memory, say), for its row; re-raised where there is no
    sweep and it is not a lack of memory, so that a single run fails as any script does."""
    if not swept and not out_of_memory(e):
        raise e
    return {'failed': 'out of memory' if out_of_memory(e) else str(e).removeprefix('error: ')
            if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"}


def result_cells(result: dict) -> list[str]:
    """ms/iter, tokens/s, MFU and peak memory of a result, as printed."""
    if result.get('failed'):
        return [f"failed: {result['failed']}", '', '', '']
    memory = result['peak_memory_gib']
    return [f"{result['ms']:.2f}", f"{result['tokens_per_s']:,.0f}",
            f"{result['mfu'] * 100:.2f}%" if result['mfu'] is not None else 'n/a',
            f"{memory:.2f} GiB" if memory is not None else 'n/a']


def result_line(result: dict, batch_size: int, compile: bool) -> str:
    """One setting's result as printed when it ends, saying what was timed where it is not what was asked."""
    ms, tokens, mfu, peak = result_cells(result)
    if result.get('failed'):
        return ms
    timed = []
    if result['fitted_batch_size'] != batch_size:
        timed.append(f"timed as batch_size={result['fitted_batch_size']}, accumulated")
    if compile and not result['compiled']:
        timed.append("timed uncompiled: torch.compile failed")
    return (f"loss {result['loss']:.4f}: {ms} ms/iter, {tokens} tokens/s, MFU {mfu}"
            f"{' (unknown peak FLOPS: pass --peak_flops)' * (mfu == 'n/a')}, peak memory {peak}"
            + (f" ({'; '.join(timed)})" if timed else ''))


def table(results: list[dict], swept: dict) -> str:
    """The results, one row per setting."""
    rows = [" | ".join([*swept, 'ms/iter', 'tokens/s', 'MFU', 'peak memory'])]
    rows += [" | ".join([str(r[k]) for k in swept] + result_cells(r)) for r in results]
    return "\n".join(rows)


def earlier_results(path: str) -> list[dict]:
    """The rows of the bench results in path ([] where there is no file); anything else there, another tool's JSON
    included, is refused: bench.py never replaces it."""
    if not os.path.exists(path):
        return []
    try:
        with open_source(path, 'rb') as f:
            earlier = json.loads(f.read())
    except UnicodeDecodeError:
        earlier = None
    except ValueError as e:  # bench results edited by hand, say: where it stops being JSON
        raise SystemExit(f"error: --json={path} is not valid JSON ({e}): mend it, or choose another file") from None
    if not (isinstance(earlier, dict) and set(earlier) == RESULTS_KEYS and isinstance(earlier['results'], list)):
        raise SystemExit(f"error: --json={path} holds something other than bench results, which this run would "
                         f"replace: choose another file")
    return earlier['results']


RESULTS_KEYS = {'device', 'swept', 'results'}


def add_result(path: str, device: str, swept: dict, row: dict):
    """One setting's row added to the results file as soon as it is measured (an interrupted sweep keeps the rows
    it has), after the rows there: an earlier run's, or another sweep's writing the same file at the same time
    (the file is read and replaced under a lock, .NAME.lock beside it)."""
    folder, name = os.path.split(os.path.abspath(path))
    with open_regular(os.path.join(folder, f'.{name}.lock'), 'a') as lock:
        lock_wait(lock)
        rows = earlier_results(path) + [{**row, 'machine': device}]  # each row says where it was measured
        with atomic_path(path) as tmp, open(tmp, 'w') as f:
            json.dump({'device': device, 'swept': list(swept), 'results': rows}, f, indent=2)
