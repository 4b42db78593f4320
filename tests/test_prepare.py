"""
A dataset folder is written as a unit (nanogpt.tokenfiles.preparing): a prepare stages its new dataset and swaps it
in whole at the end, so a prepare refused or killed partway leaves the old dataset unchanged and usable, a finished
one leaves no file of the old one whatever its layout, one prepare at a time holds a folder, and a running job keeps
reading the files it opened. Option values that would loop forever are refused.
"""
import fcntl
import json
import os
import pickle
import re
import signal
import shutil

import numpy as np
import pytest
from conftest import REPO, one_line_error, run_script, snapshot, train

from nanogpt.loader import TokenLoader
from nanogpt import tokenfiles
from nanogpt.tokenfiles import Dataset


@pytest.fixture
def dataset(char_data, tmp_path):
    d = tmp_path / 'data'
    shutil.copytree(char_data, d)
    return d


def test_a_prepare_refused_partway_through_its_input_leaves_the_old_dataset(dataset, tmp_path, gpt2_tokenizer):
    before = snapshot(dataset)
    docs = tmp_path / 'docs.jsonl'
    docs.write_text(''.join(json.dumps({'text': t}) + '\n' for t in ['a first document', 'a second one', None]))
    proc = run_script('data/openwebtext/prepare.py', '--input', str(docs), '--out_dir', str(dataset), '--num_proc=1',
                      check=False)
    one_line_error(proc, f"document 3 of {docs}", 'has no text (null)')  # found before the folder is touched
    assert snapshot(dataset) == before
    train(dataset, tmp_path / 'out', '--max_iters=1')  # still the character dataset it was


@pytest.mark.parametrize('options', [['--num_proc=0'], ['--val_fraction=1.5'], ['--val_fraction=0']])
def test_option_values_that_would_loop_or_split_nothing_are_refused(dataset, tmp_path, options):
    docs = tmp_path / 'docs.jsonl'
    docs.write_text(''.join(json.dumps({'text': f'document {i}'}) + '\n' for i in range(10)))
    proc = run_script('data/openwebtext/prepare.py', '--input', str(docs), '--out_dir', str(dataset), *options,
                      check=False)
    one_line_error(proc, options[0].split('=')[0][2:])


def test_a_zero_shard_size_is_refused_before_anything(dataset, tmp_path):
    docs = tmp_path / 'docs.jsonl'
    docs.write_text(json.dumps({'text': 'one document'}) + '\n')
    proc = run_script('data/fineweb_edu/prepare.py', '--input', str(docs), '--out_dir', str(dataset),
                      '--shard_size=0', check=False, timeout=60)
    one_line_error(proc, 'shard_size=0', 'greater than 1')  # the val split is the first shard: 2 tokens at least


PREPARES = ['data/shakespeare_char/prepare.py', 'data/shakespeare/prepare.py', 'data/openwebtext/prepare.py',
            'data/fineweb_edu/prepare.py']


@pytest.mark.parametrize('script', PREPARES)
@pytest.mark.parametrize('args, expected', [
    (['--out_dri={data}'], r"^error: unknown config key 'out_dri': did you mean 'out_dir'\?$"),
    (['--out_dir={data}', '--input={data}'], r"is a folder, where a file is read|takes files of one kind.*got \[''\]"),
    (['--out_dir={data}', '{data}/train.bin'], r"'.*train.bin' is not a config file \(arguments are config files"),
    (['--out_dir={data}', '--input'], r"^error: --input needs a value: --input=VALUE"),
], ids=['misspelt-key', 'input-is-a-folder', 'input-without-its-key', 'key-without-value'])
def test_every_prepare_reads_its_options_through_the_configurator(dataset, script, args, expected):
    # called in this process: the options are refused before the folder or the input is touched
    import runpy
    main = runpy.run_path(os.path.join(REPO, script), run_name='not_main')['main']
    before = snapshot(dataset)
    with pytest.raises(SystemExit, match=expected):
        main([a.format(data=dataset) for a in args])
    assert snapshot(dataset) == before


@pytest.mark.parametrize('script', PREPARES)
@pytest.mark.parametrize('fault', [KeyboardInterrupt(), OSError(28, 'No space left on device')],
                         ids=['ctrl-c', 'disk-full'])
def test_every_prepare_interrupted_mid_input_leaves_the_old_dataset(dataset, tmp_path, monkeypatch, request, script,
                                                                    fault):
    # the fault strikes as the second array of tokens is written, the first already on disk in the staging folder
    if script != 'data/shakespeare_char/prepare.py':
        request.getfixturevalue('gpt2_tokenizer')  # GPT-2 BPE, skipped without its files
    import runpy

    from nanogpt.tokenfiles import TokenWriter
    docs = tmp_path / ('docs.jsonl' if 'shakespeare' not in script else 'in.txt')
    docs.write_text(''.join(json.dumps({'text': f'document {i} ' * 30}) + '\n' for i in range(50))
                    if docs.suffix == '.jsonl' else 'To be, or not to be, that is the question.\n' * 200)
    write, calls = TokenWriter.write, []

    def failing_write(self, tokens):
        calls.append(1)
        if len(calls) == 2:
            raise fault
        return write(self, tokens)
    monkeypatch.setattr(TokenWriter, 'write', failing_write)
    main = runpy.run_path(os.path.join(REPO, script), run_name='not_main')['main']
    before = snapshot(dataset)
    with pytest.raises(type(fault)):
        main(['--input', str(docs), '--out_dir', str(dataset)] + (['--num_proc=1'] if 'shakespeare' not in script
                                                                   else []))
    assert len(calls) == 2 and snapshot(dataset) == before
    assert not os.path.exists(dataset / '.prepare.new')  # nothing of the new dataset stays behind
    Dataset(str(dataset))  # still the character dataset it was, readable


def test_a_folder_put_where_a_dataset_file_was_during_a_prepare_is_refused_before_the_swap(dataset, tmp_path,
                                                                                            monkeypatch):
    import runpy

    from nanogpt.tokenfiles import TokenWriter
    write = TokenWriter.write

    def planting_write(self, tokens):
        if not (dataset / 'val.bin').is_dir():
            os.remove(dataset / 'val.bin')
            (dataset / 'val.bin').mkdir()  # someone's, meanwhile
            (dataset / 'val.bin' / 'notes.txt').write_text('mine')
        return write(self, tokens)
    monkeypatch.setattr(TokenWriter, 'write', planting_write)
    kept = ['train.bin', 'meta.json', 'meta.pkl']
    before = {n: (dataset / n).read_bytes() for n in kept}
    (tmp_path / 'in.txt').write_text('Now is the winter of our discontent.\n' * 100)
    main = runpy.run_path(os.path.join(REPO, 'data/shakespeare_char/prepare.py'), run_name='not_main')['main']
    with pytest.raises(SystemExit, match=r'val.bin is a folder, where this run writes a file'):
        main(['--input', str(tmp_path / 'in.txt'), '--out_dir', str(dataset)])
    assert {n: (dataset / n).read_bytes() for n in kept} == before
    assert (dataset / 'val.bin' / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('bad, says', [(None, 'document 4 of {docs} (counting from 1, files in the order given) has no '
                                                'text (null)'),
                                       (12345, "the 'text' field of {docs} is not text in every document")])
def test_a_document_whose_text_is_not_text_is_named_before_any_folder_is_made(tmp_path, bad, says):
    from nanogpt.prepare import load_text_dataset
    docs = tmp_path / 'docs.jsonl'
    docs.write_text(''.join(json.dumps({'text': bad if i == 3 else f'document {i}'}) + '\n' for i in range(9)))
    with pytest.raises(SystemExit, match=re.escape(says.format(docs=docs))):
        load_text_dataset('x', [str(docs)], 1, 'prepare.py', str(tmp_path / 'new'))
    # datasets' copy of the input is in out_dir (which goes with it when the script ends), not ~/.cache/huggingface
    assert os.listdir(tmp_path / 'new') == [f'.prepare.cache{os.getpid()}']


@pytest.mark.parametrize('name, body', [('meta.json', b'{"project": "my photo album", "albums": [1, 2]}'),
                                        ('meta.pkl', pickle.dumps({'weights': [1, 2, 3]})),
                                        ('meta.json', b'not json at all')])
def test_a_prepare_never_replaces_a_meta_file_that_is_no_datasets(tmp_path, name, body):
    # another tool's meta.json or pickle in the folder: not a dataset's, so not the prepare's to replace
    import runpy
    out = tmp_path / 'out'
    out.mkdir()
    (out / name).write_bytes(body)
    (tmp_path / 'in.txt').write_text('To be, or not to be, that is the question.\n' * 50)
    main = runpy.run_path(os.path.join(REPO, 'data/shakespeare_char/prepare.py'), run_name='not_main')['main']
    with pytest.raises(SystemExit, match=f"{out / name} is not a dataset's {name}, and this prepare would replace it"):
        main(['--input', str(tmp_path / 'in.txt'), '--out_dir', str(out)])
    assert sorted(os.listdir(out)) == [name] and (out / name).read_bytes() == body
    if name == 'meta.json' and body.startswith(b'{'):  # nor is it read as one (bench results put there, say)
        with pytest.raises(SystemExit, match=r"is not a dataset's meta.json \(its fields: albums, project\)"):
            tokenfiles.read_meta(str(out))


@pytest.mark.parametrize('script, option', [('openwebtext', '--hub_name=foo/bar'), ('openwebtext', '--revision=v1'),
                                            ('fineweb_edu', '--remote_name=sample-100BT')])
def test_a_hub_option_with_local_files_is_refused_not_ignored(tmp_path, script, option):
    import runpy
    (tmp_path / 'docs.jsonl').write_text('{"text": "a document"}\n')
    main = runpy.run_path(os.path.join(REPO, f'data/{script}/prepare.py'), run_name='not_main')['main']
    with pytest.raises(SystemExit, match='which --input replaces: give one or the other'):
        main(['--input', str(tmp_path / 'docs.jsonl'), '--out_dir', str(tmp_path / 'out'), option])
    assert not (tmp_path / 'out').exists()


def test_one_file_given_twice_under_two_names_is_refused(tmp_path):
    from nanogpt.prepare import load_text_dataset
    (tmp_path / 'a.jsonl').write_text('{"text": "hello"}\n')
    os.link(tmp_path / 'a.jsonl', tmp_path / 'b.jsonl')  # a hard link: every document in train and val
    with pytest.raises(SystemExit, match='names a file twice'):
        load_text_dataset('x', [str(tmp_path / 'a.jsonl'), str(tmp_path / 'b.jsonl')], 1, 'prepare.py', str(tmp_path))


def test_a_signal_during_the_swap_waits_for_it_to_end(dataset, tmp_path, monkeypatch):
    # Ctrl-C as the new dataset is being put in place: acted on once it is, never half of one dataset and half of
    # the other (a folder every reader refuses as incomplete)
    import runpy

    from nanogpt import tokenfiles
    swap = tokenfiles._swap

    def signalled_swap(stage, data_dir):
        os.kill(os.getpid(), signal.SIGINT)
        swap(stage, data_dir)
    monkeypatch.setattr(tokenfiles, '_swap', signalled_swap)
    # Ctrl-C as in a terminal, whatever this process inherited (a job started with & ignores SIGINT)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    handler = signal.getsignal(signal.SIGINT)
    (tmp_path / 'in.txt').write_text('Now is the winter of our discontent.\n' * 100)
    main = runpy.run_path(os.path.join(REPO, 'data/shakespeare_char/prepare.py'), run_name='not_main')['main']
    try:
        with pytest.raises(KeyboardInterrupt):
            main(['--input', str(tmp_path / 'in.txt'), '--out_dir', str(dataset)])
    finally:
        signal.signal(signal.SIGINT, inherited)
    data = Dataset(str(dataset))  # the new dataset, whole
    assert set(data.vocab) == set('Now is the winter of our discontent.\n')
    assert signal.getsignal(signal.SIGINT) is handler  # and Ctrl-C's handler is back


def test_a_finished_prepare_leaves_no_file_of_the_old_layout(dataset, tmp_path, gpt2_tokenizer):
    # character data (train.bin, val.bin, meta.pkl) prepared again as BPE shards: none of the old files stays
    docs = tmp_path / 'docs.jsonl'
    docs.write_text(''.join(json.dumps({'text': f'document number {i} ' * 20}) + '\n' for i in range(40)))
    run_script('data/fineweb_edu/prepare.py', '--input', str(docs), '--out_dir', str(dataset), '--shard_size=2000',
               '--num_proc=1')
    names = sorted(n for n in snapshot(dataset) if n.endswith(('.bin', '.pkl', '.json')))
    assert names[0] == 'meta.json' and all(n.startswith(('train_', 'val_')) for n in names[1:]), names
    data = Dataset(str(dataset))
    assert data.vocab is None and data.tokenizer == 'gpt2'
    # and back to characters: the shards go
    run_script('data/shakespeare_char/prepare.py', '--input', str(dataset / 'input.txt'), '--out_dir', str(dataset))
    names = sorted(n for n in snapshot(dataset) if n.endswith(('.bin', '.pkl', '.json')))
    assert names == ['meta.json', 'meta.pkl', 'train.bin', 'val.bin']


def test_one_prepare_at_a_time_holds_a_folder(dataset, tmp_path):
    before = snapshot(dataset)
    with open(dataset / '.prepare.lock', 'a+') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another prepare, writing
        proc = run_script('data/shakespeare_char/prepare.py', '--input', str(dataset / 'input.txt'), '--out_dir',
                          str(dataset), check=False)
    one_line_error(proc, 'another prepare is writing the dataset in', 'wait for it to end')
    assert snapshot(dataset) == before


def test_a_running_job_reads_the_files_it_opened_whatever_is_prepared_meanwhile(dataset, tmp_path):
    data = Dataset(str(dataset))
    loader = TokenLoader(data, 'train', 4, 16, len(data.vocab))
    first = [loader.next_batch()[0] for _ in range(3)]
    # the folder prepared again from another text, with the same characters, while the job runs
    text = (dataset / 'input.txt').read_text()
    (tmp_path / 'other.txt').write_text(text[::-1])
    run_script('data/shakespeare_char/prepare.py', '--input', str(tmp_path / 'other.txt'), '--out_dir', str(dataset))
    assert Dataset(str(dataset)).vocab == data.vocab and snapshot(dataset) != {}
    loader.reset()
    again = [loader.next_batch()[0] for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    fresh = TokenLoader(Dataset(str(dataset)), 'train', 4, 16, len(data.vocab))
    assert not np.array_equal(fresh.next_batch()[0], first[0])  # a new job reads the new dataset


def test_a_dataset_is_the_one_whose_files_it_opened_whatever_is_swapped_in_meanwhile(dataset, tmp_path, monkeypatch):
    # a prepare swaps its dataset in just after the reader opened the token files: the reader checks and reads
    # what it opened, with the meta.json it read first (one prepare's dataset throughout, not a mix of two)
    from nanogpt import tokenfiles
    old_tokens, old_vocab = (dataset / 'train.bin').read_bytes(), Dataset(str(dataset)).vocab
    (tmp_path / 'other.txt').write_text('a new text with other characters: XYZ!\n' * 2000)
    check_files = tokenfiles._check_files

    def swapped_after_opening(*args):
        run_script('data/shakespeare_char/prepare.py', '--input', str(tmp_path / 'other.txt'), '--out_dir',
                   str(dataset))
        return check_files(*args)
    monkeypatch.setattr(tokenfiles, '_check_files', swapped_after_opening)
    data = Dataset(str(dataset))
    assert data.vocab == old_vocab and (dataset / 'train.bin').read_bytes() != old_tokens
    assert data.tokens('train', 0).tobytes() == old_tokens


def test_a_bpe_prepare_without_the_tokenizer_files_stops_in_one_line(dataset, tmp_path):
    # offline with an empty tiktoken cache: said once by the prepare itself, where a tokenizer worker that died of it
    # left the pool waiting forever (a proxy that refuses every connection: offline whether or not this machine is)
    before = snapshot(dataset)
    docs = tmp_path / 'docs.jsonl'
    docs.write_text(''.join(json.dumps({'text': f'document {i}'}) + '\n' for i in range(4)))
    offline = {'https_proxy': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9', 'no_proxy': '', 'NO_PROXY': '',
               'TIKTOKEN_CACHE_DIR': str(tmp_path / 'empty cache')}
    proc = run_script('data/fineweb_edu/prepare.py', '--input', str(docs), '--out_dir', str(dataset), '--num_proc=1',
                      env=offline, check=False, timeout=120, fresh=True)
    one_line_error(proc, "GPT-2's tokenizer files are not in tiktoken's cache")
    assert snapshot(dataset) == before


@pytest.mark.parametrize('planted', ['fifo', 'file', 'link'])
def test_whatever_a_killed_prepare_left_as_its_staging_folder_is_replaced(dataset, tmp_path, planted):
    stage = dataset / '.prepare.new'
    if planted == 'fifo':
        os.mkfifo(stage)  # shutil.rmtree would open it, and wait for a writer forever
    elif planted == 'file':
        stage.write_text('x')
    else:
        (tmp_path / 'elsewhere').mkdir()
        (tmp_path / 'elsewhere' / 'keep.txt').write_text('precious')
        os.symlink(tmp_path / 'elsewhere', stage)
    run_script('data/shakespeare_char/prepare.py', '--input', str(dataset / 'input.txt'), '--out_dir', str(dataset),
               timeout=60)
    Dataset(str(dataset))
    assert not os.path.lexists(stage) and (planted != 'link' or (tmp_path / 'elsewhere' / 'keep.txt').exists())


def test_a_swap_into_a_fresh_folder_cut_short_leaves_a_folder_every_reader_refuses(tmp_path, monkeypatch):
    # killed in the swap just before its last rename: every token file in place, meta.json not (without the marker
    # written first, this read as a nanoGPT dataset, unchecked)
    import runpy

    from nanogpt import tokenfiles
    replace = os.replace

    def dying_replace(src, dst):
        if '.prepare.new' in src and dst.endswith(f'fresh{os.sep}meta.json'):  # the swap's last rename
            raise KeyboardInterrupt
        return replace(src, dst)
    monkeypatch.setattr(tokenfiles.os, 'replace', dying_replace)
    (tmp_path / 'in.txt').write_text('To be, or not to be, that is the question.\n' * 100)
    main = runpy.run_path(os.path.join(REPO, 'data/shakespeare_char/prepare.py'), run_name='not_main')['main']
    with pytest.raises(KeyboardInterrupt):
        main([f'--input={tmp_path / "in.txt"}', f'--out_dir={tmp_path / "fresh"}'])
    monkeypatch.undo()
    assert {'train.bin', 'val.bin', 'meta.pkl'} <= set(os.listdir(tmp_path / 'fresh'))  # the dataset is there...
    with pytest.raises(SystemExit, match='is incomplete'):  # ...and refused, not read unchecked
        Dataset(str(tmp_path / 'fresh'))


@pytest.mark.parametrize('script, docs, args, says', [
    ('data/openwebtext/prepare.py', [''] * 8, [], "every document's text is empty"),
    ('data/fineweb_edu/prepare.py', ['a few words'] * 8, [], 'leaving no train split: lower --shard_size'),
], ids=['all-documents-empty', 'everything-in-the-val-shard'])
def test_a_prepare_with_nothing_to_train_on_leaves_the_old_dataset(dataset, tmp_path, gpt2_tokenizer, script, docs,
                                                                   args, says):
    import runpy
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in docs))
    main = runpy.run_path(os.path.join(REPO, script), run_name='not_main')['main']
    before = snapshot(dataset)
    with pytest.raises(SystemExit, match=re.escape(says)):
        main([f'--input={tmp_path / "docs.jsonl"}', f'--out_dir={dataset}', '--num_proc=1', *args])
    assert snapshot(dataset) == before


def test_a_prepare_refuses_a_models_folder_and_an_input_it_would_replace(dataset, tmp_path):
    import runpy
    main = runpy.run_path(os.path.join(REPO, 'data/shakespeare_char/prepare.py'), run_name='not_main')['main']
    export = tmp_path / 'export'  # export_hf.py's folder: its meta.json is the model's vocabulary
    export.mkdir()
    (export / 'config.json').write_text('{}')
    (export / 'meta.json').write_text('{"tokenizer": "char", "vocab_size": 3, "chars": "abc"}')
    with pytest.raises(SystemExit, match=r'holds a model \(config.json\), not a dataset'):
        main([f'--input={dataset / "input.txt"}', f'--out_dir={export}'])
    assert (export / 'meta.json').read_text() == '{"tokenizer": "char", "vocab_size": 3, "chars": "abc"}'
    before = snapshot(dataset)
    shutil.copy(dataset / 'input.txt', dataset / 'meta.json')  # a corpus kept where the swap writes meta.json
    with pytest.raises(SystemExit, match=r'is a file this prepare replaces or removes'):
        main([f'--input={dataset / "meta.json"}', f'--out_dir={dataset}'])
    assert snapshot(dataset)['meta.json'] != before['meta.json']  # the user's file, untouched


@pytest.mark.parametrize('where', ['.prepare.new/in.txt', 'meta.pkl.tmp1', 'train.bin'])
def test_an_input_the_prepare_would_remove_is_refused_and_kept(dataset, where):
    import runpy
    main = runpy.run_path(os.path.join(REPO, 'data/shakespeare_char/prepare.py'), run_name='not_main')['main']
    path = dataset / where
    path.parent.mkdir(exist_ok=True)
    path.write_text('To be, or not to be, that is the question.\n' * 50)
    with pytest.raises(SystemExit, match='is a file this prepare replaces or removes'):
        main([f'--input={path}', f'--out_dir={dataset}'])
    assert path.read_text().startswith('To be')


def test_a_folder_named_like_a_stale_temporary_is_left_alone(dataset):
    (dataset / 'train.bin.tmp99999').mkdir()  # no prepare's: a folder someone made
    run_script('data/shakespeare_char/prepare.py', '--input', str(dataset / 'input.txt'), '--out_dir', str(dataset))
    assert (dataset / 'train.bin.tmp99999').is_dir()
    Dataset(str(dataset))


def test_a_folder_named_like_the_staging_folder_that_no_prepare_made_is_never_removed(dataset):
    import runpy
    main = runpy.run_path(os.path.join(REPO, 'data/shakespeare_char/prepare.py'), run_name='not_main')['main']
    theirs = dataset / '.prepare.new'
    theirs.mkdir()
    (theirs / 'ckpt.pt').write_text('a run someone kept here')  # --out_dir=data/.prepare.new, say
    with pytest.raises(SystemExit, match=r"is not a prepare's staging folder.*move it elsewhere"):
        main([f'--input={dataset / "input.txt"}', f'--out_dir={dataset}'])
    assert (theirs / 'ckpt.pt').read_text() == 'a run someone kept here'


def test_inputs_are_checked_one_by_one_and_the_bad_one_named(tmp_path):
    # a byte not UTF-8 in the second of two files, a file that is no text, a ~ the shell left: each named
    from nanogpt.prepare import load_text_dataset
    (tmp_path / 'a.jsonl').write_text('{"text": "fine"}\n')
    (tmp_path / 'b.jsonl').write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(SystemExit, match=rf"{tmp_path / 'b.jsonl'} is not UTF-8 text \(byte 13"):
        load_text_dataset('x', [str(tmp_path / 'a.jsonl'), str(tmp_path / 'b.jsonl')], 1, 'p.py', str(tmp_path))
    (tmp_path / 'c.jsonl').write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(SystemExit, match=rf"could not read {tmp_path / 'c.jsonl'} as json"):
        load_text_dataset('x', [str(tmp_path / 'a.jsonl'), str(tmp_path / 'c.jsonl')], 1, 'p.py', str(tmp_path))
    with pytest.raises(SystemExit, match=r"not found: \['~/x.jsonl'\] \(the shell leaves a ~ after = as it is"):
        load_text_dataset('x', ['~/x.jsonl'], 1, 'p.py', str(tmp_path))
    from nanogpt.files import read_text
    (tmp_path / 'train.bin').write_bytes(bytes(100))  # a token file given as text
    with pytest.raises(SystemExit, match=r"holds NUL bytes \(at character 0\): it is not text"):
        read_text(str(tmp_path / 'train.bin'), 'input file')
