"""
Training curves from the log.jsonl that train.py appends to in its out_dir: training loss (raw and smoothed) and
val loss against iterations (tokens on the top axis), HellaSwag accuracy on its own axis when the run measured it,
the steps skipped for a non-finite loss as crosses along the bottom, and the learning rate schedule in a small panel.

    python plot.py out-shakespeare-char                    # writes out-shakespeare-char/loss.png
    python plot.py out-a out-b --output=compare.png        # several runs on one figure (.png, .pdf, .svg, ...)

With several runs each run has its own colour (named in the legend, right of the plots) and the line style says
what a line is. Runs that used different tokens per iteration are drawn against tokens seen, so that they are
compared at equal data, and iterations, which mean different amounts of data for each, are not shown; when some
run's log does not say its tokens per iteration, all are drawn against iterations with no tokens axis.

Needs matplotlib: pip install -e ".[plot]".
"""
import math
import os
import sys

from configurator import config_defaults, configure
from nanogpt import runlog
from nanogpt.errors import one_line_errors
from nanogpt.files import atomic_path, open_source

WIDTH, HEIGHT, DPI = 10, 7, 120  # a 1200 x 840 pixel figure
TITLE_RUNS = 3  # a title line per run up to this many; beyond, the legend names them
SKIPPED = 'skipped step (non-finite loss)'
STYLES = {  # what each line of a run is; the run's colour says which run
    'train loss (per step)': dict(alpha=0.25, linewidth=0.8),
    'train loss (smoothed)': dict(linewidth=1.8),
    'val loss': dict(linestyle='--', marker='o', markersize=4, linewidth=1.2),
    'HellaSwag acc_norm (right axis)': dict(linestyle=':', marker='s', markersize=4),
    SKIPPED: dict(linestyle='none', marker='x', markersize=6, clip_on=False),
}

# -----------------------------------------------------------------------------
out_dirs = []  # the out_dir of each run to plot (their log.jsonl), given bare: python plot.py out-a out-b
output = ''  # the image to write, its format from its extension ('' for loss.png in the first out_dir)
# -----------------------------------------------------------------------------
defaults = config_defaults(globals())


def read_log(out_dir: str) -> dict:
    """The records of out_dir/log.jsonl grouped by runlog's kinds: {'start': [...], 'step': [...], ...}."""
    path = os.path.join(out_dir, 'log.jsonl')
    if not os.path.exists(path):
        raise SystemExit(f"error: no {path}: train.py writes it; pass the out_dir of a run")
    records = runlog.read_records(path)
    # where another run begins: a start record of another run id (a resume keeps its run's), or, in logs of
    # runs without ids, one not resuming
    starts, run_id = [], None
    for i, r in enumerate(records):
        if 'params' in r and (r['run'] != run_id if r.get('run') else r.get('init_from') != 'resume'):
            starts.append(i)
        run_id = r.get('run', run_id) if 'params' in r else run_id
    if len(starts) > 1:  # train.py never starts a new run in a folder that has one: these are logs put together
        print(f"note: {path} holds the records of {len(starts)} runs (logs put together): drawing the last")
        records = records[starts[-1]:]
    run = {kind: [] for kind in runlog.KINDS}
    for record in sorted(records, key=lambda r: r['iter']):  # in order of iterations, however the lines were
        run[runlog.kind_of(record)].append(record)
    for record in run['step'] + run['eval'] + run['hellaswag']:
        for key in ('loss', 'lr', 'train_loss', 'val_loss', 'hellaswag'):
            if key in record and not abs(record[key]) < 1e30:  # NaN, inf, or beyond what an axis holds: not drawn
                record[key] = math.nan
    if not run['step'] and not run['eval']:
        raise SystemExit(f"error: {path} holds no training steps or evaluations yet: plot it once train.py has "
                         f"logged some")
    return run


def smooth(values: list[float], beta: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction, so the first points are not pulled towards zero."""
    out, avg, i = [], 0.0, 0
    for v in values:
        if math.isnan(v):  # a point not drawn leaves the average as it was
            out.append(v)
            continue
        i += 1
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** i))
    return out


def shown(text: str) -> str:
    """text as drawn: as it reads (a $ is no mathtext, lr$3e-4$ stays itself), a byte of a name that is not UTF-8
    as '?'."""
    return text.encode('utf-8', 'replace').decode('utf-8').replace('$', r'\$')


def name_of(out_dir: str, out_dirs: list[str] = ()) -> str:
    """The run's folder name, or its path where another run's folder has the same name (x1/out, x2/out)."""
    name = os.path.basename(os.path.normpath(out_dir))
    same = [d for d in out_dirs if os.path.basename(os.path.normpath(d)) == name]
    return shown(os.path.normpath(out_dir) if len(same) > 1 else name)


def title_of(out_dir: str, run: dict) -> str:
    if not run['start']:
        return shown(out_dir)
    start = run['start'][-1]
    shape = f"{start['n_layer']} layers, {start['n_embd']} wide" if 'n_layer' in start else ''
    return ', '.join(filter(None, [f"{name_of(out_dir)}: {start['params'] / 1e6:.2f}M parameters", shape,
                                   shown(start.get('dataset') or '')]))


def tokens_per_iter(run: dict) -> int | None:
    """The run's tokens per iteration; None when its log does not say, or a restart changed it."""
    values = {start.get('tokens_per_iter') for start in run['start']}
    return values.pop() if len(values) == 1 else None


def run_colors(n: int) -> list:
    """n distinct colours: tab20's up to 20 (its darker ten, tab10's, first), beyond that spread along turbo."""
    from matplotlib import colormaps
    if n <= 20:
        return [colormaps['tab20'](i) for i in (*range(0, 20, 2), *range(1, 20, 2))][:n]
    return [colormaps['turbo'](i / (n - 1)) for i in range(n)]


def figure(out_dirs: list[str]):
    """The figure of the runs in out_dirs (a matplotlib Figure)."""
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no display needed
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        raise SystemExit('error: plot.py needs matplotlib: pip install -e ".[plot]"') from None
    runs = [read_log(d) for d in out_dirs]
    per_iter = [tokens_per_iter(run) for run in runs]
    differ = len(set(per_iter)) > 1
    on_tokens = differ and None not in per_iter  # see the docstring
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(WIDTH, HEIGHT), dpi=DPI, sharex=True, layout='constrained',
                                    gridspec_kw={'height_ratios': [4, 1]})
    ax_hs = ax.twinx() if any(run['hellaswag'] for run in runs) else None
    drawn, colors = set(), run_colors(len(runs))
    for run, color, tokens in zip(runs, colors, per_iter):
        scale = tokens / 1e6 if on_tokens else 1  # x in tokens (millions) or in iterations
        losses = [r['loss'] for r in run['step']]
        lines = {'train loss (per step)': (ax, run['step'], losses),
                 'train loss (smoothed)': (ax, run['step'], smooth(losses)),
                 'val loss': (ax, run['eval'], [r['val_loss'] for r in run['eval']]),
                 'HellaSwag acc_norm (right axis)': (ax_hs, run['hellaswag'],
                                                     [r['hellaswag'] for r in run['hellaswag']])}
        for kind, (on, records, y) in lines.items():
            if records:
                on.plot([r['iter'] * scale for r in records], y, color=color, **STYLES[kind])
                drawn.add(kind)
        ax_lr.plot([r['iter'] * scale for r in run['step']], [r['lr'] for r in run['step']], color=color, linewidth=1.2)
        if run['skipped']:  # crosses along the bottom edge of the loss axes, whatever their y range
            ax.plot([r['iter'] * scale for r in run['skipped']], [0] * len(run['skipped']), color=color,
                    transform=ax.get_xaxis_transform(), **STYLES[SKIPPED])
            drawn.add(SKIPPED)
    ax.set_ylabel('loss (cross-entropy, nats)')
    ax.grid(True, alpha=0.3)
    if ax_hs is not None:
        ax_hs.set_ylabel('HellaSwag acc_norm')
    # the legend, outside the plots: what each line style means, then (several runs) the colour of each run
    kind_color = colors[0] if len(runs) == 1 else 'dimgrey'
    handles = [Line2D([], [], color=kind_color, label=kind, **STYLES[kind]) for kind in STYLES if kind in drawn]
    if len(runs) > 1:
        handles += [Line2D([], [], color=c, linewidth=3, label=name_of(d, out_dirs)) for d, c in zip(out_dirs, colors)]
    fig.legend(handles=handles, loc='outside right upper', fontsize=8, ncols=1 + len(handles) // 30)
    if not differ and per_iter[0]:
        top = ax.secondary_xaxis('top', functions=(lambda i: i * per_iter[0] / 1e6, lambda t: t * 1e6 / per_iter[0]))
        top.set_xlabel('tokens (millions)')
    ax_lr.set_ylabel('learning rate')
    ax_lr.set_xlabel('tokens (millions)' if on_tokens else 'iteration' if not differ else
                     "iteration (no tokens axis: the runs differ, and not every log gives one tokens per iteration)")
    ax_lr.grid(True, alpha=0.3)
    ax_lr.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
    title = '\n'.join(map(title_of, out_dirs, runs)) if len(runs) <= TITLE_RUNS else f"{len(runs)} runs"
    ax.set_title(title, fontsize=11)  # over the plots, clear of the legend
    return fig


MARK = 'nanoGPT plot.py'  # in every plot's metadata, where its format has some: what tells a plot from other files
MARKED = ('png', 'pdf', 'svg', 'ps', 'eps')


def plot(out_dirs: list[str], output: str):
    fig = figure(out_dirs)
    kind = os.path.splitext(output)[1][1:].lower()
    if kind not in MARKED:  # the formats whose metadata tells a plot of plot.py's, which a re-plot may replace
        raise SystemExit(f"error: --output={output}: plot.py writes {', '.join(MARKED)} files; end the name with "
                         f"one of them, e.g. .png")
    if os.path.isfile(output) and os.path.getsize(output):  # a plot replaces an earlier plot, never another file
        with open_source(output, 'rb') as f:
            ours = MARK.encode() in f.read(100 << 20)
        if not ours:
            raise SystemExit(f"error: --output={output} exists and is no plot of plot.py's (it tells its own by their "
                             f"metadata): choose another name, or remove it first")
    with atomic_path(output) as tmp:  # an interrupted write leaves the previous plot, not half a file
        fig.savefig(tmp, format=kind, metadata={'Creator': MARK})
    print(f"wrote {output}")


if __name__ == '__main__':
    one_line_errors(defaults)
    cfg = configure(defaults, sys.argv[1:], positional='out_dirs')
    if not cfg.out_dirs:
        raise SystemExit("error: name the out_dir of each run to plot: python plot.py out-shakespeare-char [out-b ...]")
    if len({os.path.realpath(d) for d in cfg.out_dirs}) < len(cfg.out_dirs):  # one run drawn twice hides itself
        raise SystemExit(f"error: a run is named twice ({' '.join(cfg.out_dirs)}): give each once")
    plot(cfg.out_dirs, cfg.output or os.path.join(cfg.out_dirs[0], 'loss.png'))
