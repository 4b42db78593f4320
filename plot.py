"""
Training curves from the log.jsonl that train.py appends to in its out_dir: training loss (raw and smoothed) and
val loss against iterations (tokens on the top axis), HellaSwag accuracy on its own axis when the run measured it,
and the learning rate schedule in a small panel below.

    python plot.py out-shakespeare-char                    # writes out-shakespeare-char/loss.png
    python plot.py out-a out-b --output=compare.png        # several runs on one figure

Needs matplotlib: pip install -e ".[plot]".
"""
import argparse
import json
import os

WIDTH, HEIGHT, DPI = 10, 7, 120  # a 1200 x 840 pixel figure


def read_log(out_dir: str) -> dict:
    """The records of out_dir/log.jsonl, split by kind: the run's start records, training steps, evaluations."""
    path = os.path.join(out_dir, 'log.jsonl')
    if not os.path.exists(path):
        raise SystemExit(f"error: no {path}: train.py writes it; pass the out_dir of a run")
    run = {'start': [], 'steps': [], 'evals': []}
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise SystemExit(f"error: {path}:{line_no} is not a JSON line") from None
            kind = 'start' if 'params' in record else 'evals' if 'val_loss' in record or 'hellaswag' in record \
                else 'steps'
            run[kind].append(record)
    if not run['steps'] and not run['evals']:
        raise SystemExit(f"error: {path} holds no training steps yet")
    return run


def smooth(values: list[float], beta: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction, so the first points are not pulled towards zero."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** i))
    return out


def title_of(out_dir: str, run: dict) -> str:
    if not run['start']:
        return out_dir
    start = run['start'][-1]
    shape = f"{start['n_layer']} layers, {start['n_embd']} wide" if 'n_layer' in start else ''
    return f"{os.path.basename(os.path.normpath(out_dir))}: {start['params'] / 1e6:.2f}M parameters, {shape}, " \
           f"{start.get('dataset', '')}"


def plot(out_dirs: list[str], output: str):
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('error: plot.py needs matplotlib: pip install -e ".[plot]"') from None
    runs = [read_log(d) for d in out_dirs]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(WIDTH, HEIGHT), dpi=DPI, sharex=True,
                                    gridspec_kw={'height_ratios': [4, 1]})
    ax_hs = None
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for k, (out_dir, run) in enumerate(zip(out_dirs, runs)):
        color = colors[k % len(colors)]
        name = os.path.basename(os.path.normpath(out_dir)) if len(runs) > 1 else ''
        label = (lambda what: f"{name} {what}".strip())
        steps = run['steps']
        if steps:
            iters, losses = [r['iter'] for r in steps], [r['loss'] for r in steps]
            ax.plot(iters, losses, color=color, alpha=0.25, linewidth=0.8, label=label('train loss (per step)'))
            ax.plot(iters, smooth(losses), color=color, linewidth=1.8, label=label('train loss (smoothed)'))
            ax_lr.plot(iters, [r['lr'] for r in steps], color=color, linewidth=1.2)
        evals = [r for r in run['evals'] if 'val_loss' in r]
        if evals:
            ax.plot([r['iter'] for r in evals], [r['val_loss'] for r in evals], color=color, linestyle='--',
                    marker='o', markersize=4, linewidth=1.2, label=label('val loss'))
        hellaswag = [r for r in run['evals'] if 'hellaswag' in r]
        if hellaswag:
            ax_hs = ax_hs or ax.twinx()
            ax_hs.plot([r['iter'] for r in hellaswag], [r['hellaswag'] for r in hellaswag], color=color,
                       linestyle=':', marker='s', markersize=4, label=label('HellaSwag acc_norm'))
    ax.set_ylabel('loss (cross-entropy, nats)')
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if ax_hs is not None:
        ax_hs.set_ylabel('HellaSwag acc_norm')
        more_handles, more_labels = ax_hs.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc='upper right', fontsize=8)
    # tokens seen on the top axis, from the first run's tokens per iteration
    start = runs[0]['start'][-1] if runs[0]['start'] else None
    if start and start.get('tokens_per_iter'):
        per_iter = start['tokens_per_iter']
        top = ax.secondary_xaxis('top', functions=(lambda i: i * per_iter / 1e6, lambda t: t * 1e6 / per_iter))
        top.set_xlabel('tokens (millions)')
    ax_lr.set_ylabel('learning rate')
    ax_lr.set_xlabel('iteration')
    ax_lr.grid(True, alpha=0.3)
    ax_lr.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
    fig.suptitle('\n'.join(title_of(d, r) for d, r in zip(out_dirs, runs)), fontsize=11)
    fig.tight_layout()
    fig.savefig(output)
    print(f"wrote {output}")


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out_dirs', nargs='+', help="out_dir of each run to plot (their log.jsonl)")
    parser.add_argument('--output', help='the PNG to write (default: loss.png in the first out_dir)')
    args = parser.parse_args()
    plot(args.out_dirs, args.output or os.path.join(args.out_dirs[0], 'loss.png'))
