"""
The run log: one JSON object per line in out_dir/log.jsonl (what plot.py draws), and the same records to wandb when
asked. Its record kinds, each with 'iter':
    start   params, n_layer, n_head, n_embd, block_size, dataset, tokens_per_iter, init_from, time
    step    loss, lr, grad_norm, ms, tok_per_s, mfu
    eval    train_loss, val_loss, lr
    skipped skipped (the count of non-finite steps in a row)
    hellaswag  hellaswag (acc_norm), hellaswag_acc
"""

import json
import os

from util import atomic_path


class RunLog:
    """Appends records on the master process (the others' log() does nothing). A resumed or restarted run replays the
    iterations after its checkpoint: opening the log at iter_num drops their records, so each iteration appears
    once."""

    def __init__(self, out_dir: str, master: bool, iter_num: int, wandb_log: bool = False, wandb_project: str = '',
                 wandb_run_name: str = '', config: dict | None = None):
        self.path = os.path.join(out_dir, 'log.jsonl')
        self.master = master
        self.wandb = None
        if not master:
            return
        if os.path.exists(self.path):
            with open(self.path, encoding='utf-8') as f:
                records = [json.loads(line) for line in f if line.strip()]
            kept = [r for r in records if r['iter'] < iter_num or (r['iter'] == iter_num and 'loss' in r)]
            with atomic_path(self.path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
                f.writelines(json.dumps(r) + '\n' for r in kept)
        if wandb_log:
            import wandb
            self.wandb = wandb.init(project=wandb_project, name=wandb_run_name, config=config)

    def log(self, **record):
        if self.master:
            with open(self.path, 'a', encoding='utf-8') as f:
                f.write(json.dumps(record) + '\n')
            if self.wandb is not None:
                self.wandb.log(record)

    def finish(self):
        if self.wandb is not None:
            self.wandb.finish()
