"""
The run log: one JSON object per line in out_dir/log.jsonl (what plot.py draws), and the same records to wandb when
asked. Its record kinds, each with 'iter', are defined here once (KINDS) for the writer and every reader:
    start      params, n_layer, n_head, n_embd, block_size, dataset, tokens_per_iter, init_from, time, run_id (torchrun's),
               run (the run's own id, which its checkpoints carry: a resume keeps it), segment (this process's part)
    step       loss, lr, grad_norm, ms, tok_per_s, mfu
    eval       train_loss, val_loss, lr
    skipped    skipped (the count of non-finite steps in a row; the step changed nothing)
    hellaswag  hellaswag (acc_norm), hellaswag_acc
read_records reads them back, skipping with a note what is not a record (a torn last line, left by a kill or a full
disk during an append, or an edited one), so that plot.py does not fail on it; a resume drops the records after its
checkpoint and keeps every other line as it is.
"""

import json
import os

from nanogpt import fields
from nanogpt.files import atomic_path, open_regular, open_source

# each kind by the key that only its records have
KINDS = {'start': 'params', 'step': 'loss', 'eval': 'val_loss', 'skipped': 'skipped', 'hellaswag': 'hellaswag'}


ALSO = {'step': ('lr',), 'start': ('n_layer', 'n_embd')}  # what else a kind's records hold, which plot.py reads
# the fields of a record that readers use, and what each must be (a record where one is not is no record of a run)
OPTIONAL_NUMBER = ('a number or null', lambda v: v is None or fields.NUMBER[1](v))
RECORD = dict(iter=fields.COUNT, loss=fields.NOT_NEGATIVE, val_loss=fields.NOT_NEGATIVE,
              train_loss=fields.NOT_NEGATIVE, lr=fields.NOT_NEGATIVE, grad_norm=fields.NOT_NEGATIVE,
              ms=fields.NOT_NEGATIVE, tok_per_s=fields.NOT_NEGATIVE, mfu=OPTIONAL_NUMBER,
              params=fields.POSITIVE_INT, tokens_per_iter=fields.POSITIVE_INT, hellaswag=fields.NUMBER,
              hellaswag_acc=fields.NUMBER, time=fields.NUMBER, dataset=fields.STR, init_from=fields.STR,
              n_layer=fields.POSITIVE_INT, n_embd=fields.POSITIVE_INT, run=fields.STR, segment=fields.STR)


def kind_of(record: dict) -> str | None:
    """The kind of a record (see KINDS), None for what no version of train.py writes (or a field of the wrong type)."""
    if isinstance(record, dict) and 'iter' in record and all(ok(record[k]) for k, (_, ok) in RECORD.items()
                                                             if k in record):
        for kind, key in KINDS.items():
            if key in record:
                return kind if all(k in record for k in ALSO.get(kind, ())) else None
    return None


def _lines(path: str):
    """(line number, line, record) for each line of a log.jsonl that is not blank; record is None where the line is no
    record."""
    with open_source(path, 'rb') as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            yield line_no, line, record if kind_of(record) else None


def read_records(path: str, note=print, fate: str = 'skipped') -> list[dict]:
    """The records of a log.jsonl, in order. A line that is not a record (torn by a kill mid-append, edited, or
    garbage) is skipped, and note() says which lines were (and their fate)."""
    records, odd = [], []
    for line_no, _, record in _lines(path):
        (odd.append(line_no) if record is None else records.append(record))
    if odd:
        lines = ', '.join(map(str, odd[:5])) + (f" and {len(odd) - 5} more" if len(odd) > 5 else '')
        note(f"note: {path}: line(s) {lines} are not records of a run (a write cut short by a kill or a full disk, "
             f"or an edit): {fate}")
    return records


class RunLog:
    """Appends records on the master process (the others' log() does nothing). A resumed or restarted run replays the
    iterations after its checkpoint: opening the log at iter_num drops their records, so each iteration appears
    once. An eval-only run (write=False) writes nothing to the folder."""

    def __init__(self, out_dir: str, master: bool, iter_num: int, wandb_log: bool = False, wandb_project: str = '',
                 wandb_run_name: str = '', config: dict | None = None, write: bool = True):
        self.path = os.path.join(out_dir, 'log.jsonl')
        self.master = master
        self.write = write and master
        self.wandb = None
        if not master:
            return
        if self.write and os.path.exists(self.path):
            read_records(self.path, fate='kept as they are (plot.py skips them)')
            kept = [line.rstrip(b'\n') + b'\n' for _, line, r in _lines(self.path)
                    if r is None or r['iter'] < iter_num or (r['iter'] == iter_num and 'loss' in r)]
            with atomic_path(self.path) as tmp, open(tmp, 'wb') as f:
                f.writelines(kept)
        if wandb_log:
            import wandb
            self.wandb = wandb.init(project=wandb_project, name=wandb_run_name, config=config)

    def log(self, **record):
        assert kind_of(record), f"not a record kind of runlog.KINDS: {record}"
        if self.write:
            with open_regular(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')
        if self.master and self.wandb is not None:
            self.wandb.log(record)

    def finish(self):
        if self.wandb is not None:
            self.wandb.finish()
