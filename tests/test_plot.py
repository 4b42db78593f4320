"""
plot.py on hand-written log.jsonl files, run as the real script: the record kinds of nanogpt/runlog.py (skipped steps
included), lines that are not records, logs with nothing to draw, and fourteen runs on one figure.
"""
import json
import os
import struct

import pytest

from conftest import one_line_error, run_script

pytest.importorskip('matplotlib')


def start(tokens_per_iter: int = 8192) -> dict:
    return dict(iter=0, params=10_650_000, n_layer=6, n_head=6, n_embd=384, block_size=256,
                dataset='shakespeare_char', tokens_per_iter=tokens_per_iter, init_from='scratch', time=0.0)


def records(iters: int = 20, tokens_per_iter: int = 8192, skipped=()) -> list[dict]:
    """What train.py logs for a run of iters steps, evaluating every 10; the steps in skipped were non-finite."""
    out = [start(tokens_per_iter)]
    for i in range(iters + 1):
        if i % 10 == 0:
            out.append(dict(iter=i, train_loss=4 - i / 10, val_loss=4.1 - i / 10, lr=1e-3))
        if i in skipped:
            out.append(dict(iter=i, skipped=skipped.index(i) + 1))
        elif i > 0:
            out.append(dict(iter=i, loss=4 - i / 10, lr=1e-3, grad_norm=1.0, ms=10.0, tok_per_s=1e5, mfu=None))
    return out


def write_log(out_dir, lines: list) -> str:
    """out_dir/log.jsonl holding lines: records (dicts) and raw text, as they come."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = ''.join(json.dumps(line) + '\n' if isinstance(line, dict) else line for line in lines)
    (out_dir / 'log.jsonl').write_text(text)
    return str(out_dir)


def assert_png(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b'\x89PNG\r\n\x1a\n'
    assert struct.unpack('>II', header[16:24]) == (1200, 840)


def test_plot_draws_a_run_with_skipped_steps(tmp_path):
    out = write_log(tmp_path / 'run', records(skipped=(7, 8, 9)))
    proc = run_script('plot.py', out)
    assert 'wrote' in proc.stdout
    assert_png(tmp_path / 'run' / 'loss.png')
    run_script('plot.py', out)  # drawn again: an earlier plot is replaced
    assert_png(tmp_path / 'run' / 'loss.png')
    (tmp_path / 'notes.pdf').write_text('my notes')  # a file of that name that is no image is not
    one_line_error(run_script('plot.py', out, f'--output={tmp_path / "notes.pdf"}', check=False),
                   'exists and is no plot of plot.py')
    assert (tmp_path / 'notes.pdf').read_text() == 'my notes'
    one_line_error(run_script('plot.py', out, out + '/', check=False), 'a run is named twice')  # one hides the other
    # only formats whose metadata can say a plot is plot.py's, which a re-plot may then replace
    one_line_error(run_script('plot.py', out, f'--output={tmp_path / "x.jpg"}', check=False),
                   'plot.py writes png, pdf, svg, ps, eps files')
    import matplotlib.pyplot as plt  # an image, but someone else's: a figure of a thesis
    plt.figure().savefig(tmp_path / 'thesis.pdf')
    thesis = (tmp_path / 'thesis.pdf').read_bytes()
    one_line_error(run_script('plot.py', out, f'--output={tmp_path / "thesis.pdf"}', check=False),
                   'exists and is no plot of plot.py')
    assert (tmp_path / 'thesis.pdf').read_bytes() == thesis

    import plot
    ax = plot.figure([out]).axes[0]
    marked = [list(line.get_xdata()) for line in ax.get_lines() if line.get_marker() == 'x']
    assert marked == [[7, 8, 9]]  # the skipped steps are marked, and no curve runs through them
    assert all(7 not in line.get_xdata() for line in ax.get_lines() if line.get_marker() != 'x')


def test_plot_drops_garbage_and_a_torn_last_line(tmp_path):
    lines = records()
    lines.insert(3, 'not json at all\n')  # line 4
    lines.append('{"iter": 21, "loss": 2.0, "lr"')  # line 26: the append cut short by a kill
    out = write_log(tmp_path / 'run', lines)
    proc = run_script('plot.py', out, f'--output={tmp_path / "run.png"}')
    assert 'line(s) 4, 26' in proc.stdout + proc.stderr
    assert_png(tmp_path / 'run.png')


@pytest.mark.parametrize('lines', [
    [],  # created, never written to
    [start(), '{"iter": 1, "lo'],  # killed during its first append
    [start(), *({'iter': i, 'skipped': i} for i in range(1, 5))],  # every step non-finite
], ids=['empty', 'start-and-torn-line', 'only-skipped-steps'])
def test_plot_refuses_a_log_with_nothing_to_draw(tmp_path, lines):
    out = write_log(tmp_path / 'run', lines)
    proc = run_script('plot.py', out, check=False)
    one_line_error(proc, str(tmp_path / 'run' / 'log.jsonl'), 'no training steps or evaluations', 'train.py')


def test_plot_fourteen_runs_with_different_tokens_per_iter(tmp_path):
    tokens = [1024 * (k + 1) for k in range(14)]
    out_dirs = [write_log(tmp_path / f'run-{k:02d}', records(10 + k, t))
                for k, t in enumerate(tokens)]
    run_script('plot.py', *out_dirs, f'--output={tmp_path / "all.png"}')
    assert_png(tmp_path / 'all.png')

    import plot
    colors = plot.run_colors(14)
    assert len(set(colors)) == 14
    fig = plot.figure(out_dirs)
    fig.canvas.draw()
    ax, ax_lr = fig.axes[:2]
    # runs of different tokens per iteration are drawn against tokens, each with its own; no top axis from one run
    assert ax_lr.get_xlabel() == 'tokens (millions)' and not ax.child_axes
    ends = [line.get_xdata()[-1] for line in ax_lr.get_lines()]
    assert ends == pytest.approx([(10 + k) * t / 1e6 for k, t in enumerate(tokens)])
    assert [line.get_color() for line in ax_lr.get_lines()] == colors
    # the legend names every run, outside the plots and whole inside the figure; the title clear of the plots
    (legend,) = fig.legends
    assert {text.get_text() for text in legend.get_texts()} >= {f'run-{k:02d}' for k in range(14)}
    figure_box = fig.bbox
    legend_box = legend.get_window_extent()
    assert figure_box.x0 <= legend_box.x0 and legend_box.x1 <= figure_box.x1
    assert figure_box.y0 <= legend_box.y0 and legend_box.y1 <= figure_box.y1
    title_box = ax.title.get_window_extent()
    assert ax.get_title() == '14 runs'  # not fourteen lines
    assert ax.get_window_extent().y1 <= title_box.y0 and title_box.y1 <= figure_box.y1
    for box in [title_box, *(a.get_window_extent() for a in fig.axes)]:
        assert not box.overlaps(legend_box)


@pytest.mark.parametrize('args, expected', [
    ([], ('name the out_dir of each run to plot',)),
    (['{run}', '--ouput=x.png'], ("unknown config key 'ouput'", "did you mean 'output'")),
    (['{run}', '--output={tmp}/run.txt'], ('--output=', 'run.txt', 'end the name with one of them')),
    (['{run}', '--output={tmp}/run'], ('end the name with one of them',)),
], ids=['no-run', 'misspelt-option', 'unknown-format', 'no-extension'])
def test_plot_options_go_through_the_configurator(tmp_path, args, expected):
    run = write_log(tmp_path / 'run', records())
    proc = run_script('plot.py', *(a.format(run=run, tmp=tmp_path) for a in args), check=False)
    one_line_error(proc, *expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run'] and not (tmp_path / 'run' / 'loss.png').exists()


def test_values_no_axis_can_hold_are_not_drawn_and_the_smoothed_curve_goes_on(tmp_path):
    lines = records()
    for r in lines:
        if r.get('iter') == 5 and 'loss' in r:
            r.update(loss=1e308, lr=1e308)
        if r.get('iter') == 6 and 'loss' in r:
            r['loss'] = float('nan')
    out = write_log(tmp_path / 'run', lines)
    run_script('plot.py', out)
    assert_png(tmp_path / 'run' / 'loss.png')

    import plot
    smoothed = [line for line in plot.figure([out]).axes[0].get_lines() if line.get_linewidth() == 1.8][0]
    y = list(smoothed.get_ydata())
    assert all(v != v for v in y[4:6]) and all(v == v and v < 5 for v in y[:4] + y[6:])  # NaN at 5 and 6 only


def test_records_are_drawn_in_order_and_logs_put_together_draw_their_last_run(tmp_path):
    first, second = records(iters=20), records(iters=10, tokens_per_iter=4096)
    out = write_log(tmp_path / 'run', first[:1] + first[1:][::-1] + second)  # reversed lines, then another run
    import plot
    run = plot.read_log(out)
    assert [r['iter'] for r in run['step']] == list(range(1, 11)) and run['start'][0]['tokens_per_iter'] == 4096
    # runs told by their ids: a resume of one run continues it, another run's records (even resuming) begin another
    a, b = records(iters=20), records(iters=30)
    a[0]['run'], b[0]['run'], b[0]['init_from'] = 'a1', 'b2', 'resume'
    resumed = {**a[0], 'iter': 10, 'init_from': 'resume'}
    out = write_log(tmp_path / 'ids', a[:12] + [resumed] + a[12:] + b)
    assert [r['iter'] for r in plot.read_log(out)['step']] == list(range(1, 31))  # b's, whole
    out = write_log(tmp_path / 'one', a[:12] + [resumed] + a[12:])
    assert len(plot.read_log(out)['start']) == 2  # one run, resumed: both starts kept
    # names drawn as they read: a $ is no mathtext, a byte that is not UTF-8 a '?'
    assert plot.shown('lr$3e-4$') == r'lr\$3e-4\$' and plot.shown(os.fsdecode(b'run\xfe')) == 'run?'

