"""
The token files: every prepare script on small inputs (counts, round trips, shards, local corpora, an offline
download that fails in one line), interrupted writes leaving no final file, and TokenLoader (windows of the data,
resumable batch stream, ranks splitting one stream, shards read in proportion, its refusals).
"""
import json
import os

import numpy as np
import pytest
import torch
from conftest import REPO, run_script

from nanogpt.loader import TokenLoader
from nanogpt.tokenfiles import Dataset, TokenWriter, split_files

SHAKESPEARE = os.path.join(REPO, '..', 'shared', 'data', 'tinyshakespeare', 'input.txt')
needs_shakespeare = pytest.mark.skipif(not os.path.exists(SHAKESPEARE), reason='no ../shared Tiny Shakespeare')


def write_docs(path, n=40, seed=0):
    """A jsonl corpus of n small documents."""
    rng = np.random.default_rng(seed)
    words = ['the', 'quick', 'brown', 'fox', 'jumps', 'over', 'lazy', 'dog', 'and', 'runs', 'café', '🙂']
    docs = [' '.join(rng.choice(words, size=rng.integers(5, 60))) for _ in range(n)]
    docs[3] = 'a document that mentions <|endoftext|> in its text'
    with open(path, 'w') as f:
        for d in docs:
            f.write(json.dumps({'text': d}) + '\n')
    return docs


def read_plain_pickle(path):
    from nanogpt.tokenfiles import _PlainUnpickler  # nanoGPT's meta.pkl, read as plain data only
    with open(path, 'rb') as f:
        return _PlainUnpickler(f).load()


def read_bin(path):
    return np.fromfile(path, dtype=np.uint16)


# -----------------------------------------------------------------------------
# prepare scripts

def test_shakespeare_char_small_input(tmp_path):
    text = 'hello world, hello shakespeare!\n' * 10
    (tmp_path / 'in.txt').write_text(text)
    run_script('data/shakespeare_char/prepare.py', '--input', str(tmp_path / 'in.txt'), '--out_dir', str(tmp_path))
    meta = read_plain_pickle(tmp_path / 'meta.pkl')
    assert meta['vocab_size'] == len(set(text)) and meta['itos'][meta['stoi']['h']] == 'h'
    train, val = read_bin(tmp_path / 'train.bin'), read_bin(tmp_path / 'val.bin')
    n = len(text)
    assert len(train) == int(n * 0.9) and len(val) == n - int(n * 0.9)
    decoded = ''.join(meta['itos'][i] for i in np.concatenate([train, val]))
    assert decoded == text
    assert json.load(open(tmp_path / 'meta.json'))['tokens'] == {'train': len(train), 'val': len(val)}


@needs_shakespeare
def test_shakespeare_char_counts(tmp_path):
    run_script('data/shakespeare_char/prepare.py', '--input', SHAKESPEARE, '--out_dir', str(tmp_path))
    assert os.path.getsize(tmp_path / 'train.bin') == 2 * 1_003_854
    assert os.path.getsize(tmp_path / 'val.bin') == 2 * 111_540
    assert read_plain_pickle(tmp_path / 'meta.pkl')['vocab_size'] == 65


@needs_shakespeare
def test_shakespeare_bpe_counts(tmp_path, gpt2_tokenizer):
    run_script('data/shakespeare/prepare.py', '--input', SHAKESPEARE, '--out_dir', str(tmp_path))
    train, val = read_bin(tmp_path / 'train.bin'), read_bin(tmp_path / 'val.bin')
    assert len(train) == 301_966 and len(val) == 36_059
    text = open(SHAKESPEARE).read()
    assert gpt2_tokenizer.decode(train.tolist()) + gpt2_tokenizer.decode(val.tolist()) == text


def test_openwebtext_pipeline_on_local_files(tmp_path, gpt2_tokenizer):
    docs = write_docs(tmp_path / 'docs.jsonl', n=40)
    run_script('data/openwebtext/prepare.py', '--input', str(tmp_path / 'docs.jsonl'), '--out_dir', str(tmp_path),
               '--num_proc=2', '--val_fraction=0.1')
    eot = gpt2_tokenizer.eot_token
    decoded = []
    for split in ('train', 'val'):
        ids = read_bin(tmp_path / f'{split}.bin')
        assert ids[-1] == eot
        # every document ends with <|endoftext|>; a literal '<|endoftext|>' in a text stays plain text
        decoded += gpt2_tokenizer.decode(ids.tolist()).split('<|endoftext|>')[:-1]
    assert len(decoded) == 41  # 40 documents, one of them spelling out the token
    assert sorted(decoded) == sorted(docs[:3] + ['a document that mentions ', ' in its text'] + docs[4:])
    assert (read_bin(tmp_path / 'val.bin') == eot).sum() == 4  # 10% of 40 documents
    meta = json.load(open(tmp_path / 'meta.json'))
    assert meta['tokenizer'] == 'gpt2' and meta['tokens']['val'] == len(read_bin(tmp_path / 'val.bin'))


def test_fineweb_edu_shards_on_local_files(tmp_path, gpt2_tokenizer):
    docs = write_docs(tmp_path / 'docs.jsonl', n=60)
    run_script('data/fineweb_edu/prepare.py', '--input', str(tmp_path / 'docs.jsonl'), '--out_dir', str(tmp_path),
               '--num_proc=2', '--shard_size=500')
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith('.bin'))
    assert files[-1] == 'val_000000.bin' and files[0] == 'train_000001.bin'
    shards = [read_bin(tmp_path / 'val_000000.bin')] + [read_bin(tmp_path / f) for f in files[:-1]]
    assert all(len(s) == 500 for s in shards[:-1]) and 0 < len(shards[-1]) <= 500
    # the shards, in order, are the documents in order
    all_ids = np.concatenate(shards)
    expected = []
    for d in docs:
        expected += gpt2_tokenizer.encode_ordinary(d) + [gpt2_tokenizer.eot_token]
    assert all_ids.tolist() == expected
    assert split_files(str(tmp_path), 'train') == [str(tmp_path / f) for f in files[:-1]]
    # a re-run with bigger shards removes the shards the first run left behind
    run_script('data/fineweb_edu/prepare.py', '--input', str(tmp_path / 'docs.jsonl'), '--out_dir', str(tmp_path),
               '--num_proc=1', '--shard_size=2000')
    assert len(split_files(str(tmp_path), 'train')) == -(-len(expected) // 2000) - 1


def test_offline_download_failure_is_one_clear_message(tmp_path):
    env = {'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf')}
    proc = run_script('data/openwebtext/prepare.py', '--out_dir', str(tmp_path), env=env, check=False)
    assert proc.returncode != 0
    assert 'could not load Skylion007/openwebtext' in proc.stderr and '--input' in proc.stderr
    assert 'Traceback' not in proc.stderr
    proc = run_script('data/shakespeare_char/prepare.py', '--out_dir', str(tmp_path / 'new'),
                      env={'http_proxy': 'http://127.0.0.1:9', 'https_proxy': 'http://127.0.0.1:9'}, check=False)
    assert not (tmp_path / 'new').exists()  # a folder made for the download goes with it
    # the proxy (the discard port of this machine) refuses every connection, online or not
    assert proc.returncode != 0
    assert 'could not download' in proc.stderr and '--input PATH' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'new' / 'input.txt').exists()  # no partial download left where the next run would read it


# -----------------------------------------------------------------------------
# writer

def test_failure_mid_write_leaves_no_final_file(tmp_path):
    with pytest.raises(RuntimeError):
        with TokenWriter(str(tmp_path), 'train') as writer:
            writer.write(np.arange(100))
            raise RuntimeError('killed mid-write')
    assert os.listdir(tmp_path) == []
    # shards: completed ones stay (each is whole), the one being filled does not appear
    with pytest.raises(RuntimeError):
        with TokenWriter(str(tmp_path), 'train', shard_size=10) as writer:
            writer.write(np.arange(25))
            raise RuntimeError('killed mid-write')
    assert sorted(os.listdir(tmp_path)) == ['train_000000.bin', 'train_000001.bin']
    assert read_bin(tmp_path / 'train_000001.bin').tolist() == list(range(10, 20))


def test_writer_rejects_ids_beyond_uint16(tmp_path):
    with pytest.raises(ValueError, match='uint16'):
        with TokenWriter(str(tmp_path), 'train') as writer:
            writer.write(np.array([1, 70000]))
    assert os.listdir(tmp_path) == []


# -----------------------------------------------------------------------------
# reader

def make_split(tmp_path, n=1000, vocab=50):
    ids = np.random.default_rng(0).integers(0, vocab, n)
    for split in ('train', 'val'):
        with TokenWriter(str(tmp_path), split) as w:
            w.write(ids)
    return ids


def test_loader_batches_are_windows_of_the_data(tmp_path):
    ids = make_split(tmp_path)
    loader = TokenLoader(Dataset(str(tmp_path)), 'train', batch_size=8, block_size=16, vocab_size=50)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    text = ids.tolist()
    for row, target in zip(x.tolist(), y.tolist()):
        starts = [i for i in range(len(text) - 16) if text[i:i + 16] == row]
        assert starts and text[starts[0] + 1:starts[0] + 17] == target


def test_loader_state_resumes_the_batch_sequence(tmp_path):
    make_split(tmp_path)
    a = TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16, seed=5)
    a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch()[0] for _ in range(3)]
    b = TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16, seed=99)
    b.load_state_dict(state)
    assert all(torch.equal(e, b.next_batch()[0]) for e in expected)
    c = TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16, seed=6)
    assert not torch.equal(expected[0], c.next_batch()[0])


def test_loader_ranks_split_the_single_process_stream(tmp_path):
    make_split(tmp_path)
    single = TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16, seed=5)
    ranks = [TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        for r in range(2):
            assert torch.equal(single.next_batch()[0], ranks[r].next_batch()[0])


def test_loader_reads_shards_in_proportion(tmp_path):
    with TokenWriter(str(tmp_path), 'train', shard_size=100) as w:
        w.write(np.concatenate([np.full(100, 1), np.full(100, 2), np.full(40, 3)]))
    loader = TokenLoader(Dataset(str(tmp_path), splits=('train',)), 'train', batch_size=256, block_size=20)
    x, _ = loader.next_batch()
    seen = set(x[:, 0].tolist())
    assert seen == {1, 2, 3}  # the last shard has 40 - 20 = 20 windows of 180
    assert all(len(set(row)) == 1 for row in x.tolist())  # a window never straddles two shards


def test_a_shard_missing_or_one_the_prepare_never_wrote_is_refused(tmp_path):
    from nanogpt.tokenfiles import write_meta
    tokens = np.arange(300) % 50

    def shards(folder, count):
        folder.mkdir()
        with TokenWriter(str(folder), lambda i: 'val' if i == 0 else 'train', shard_size=100) as w:
            w.write(tokens[:count * 100])
        write_meta(str(folder), tokenizer='gpt2', vocab_size=50257, tokens=w.counts)

    # the first shard missing: the numbers that are present have no gap between them
    shards(tmp_path / 'a', 3)
    os.remove(tmp_path / 'a' / 'val_000000.bin')
    (tmp_path / 'a' / 'val_000003.bin').write_bytes((tmp_path / 'a' / 'train_000001.bin').read_bytes())
    with pytest.raises(SystemExit, match=r'has shards up to number 3 but not 000000 \(1 missing\)'):
        Dataset(str(tmp_path / 'a'), note=lambda _: None)
    # a shard after the last one the prepare wrote (a larger, older prepare's, or a copy): no gap, but not listed
    shards(tmp_path / 'b', 3)
    Dataset(str(tmp_path / 'b'), note=lambda _: None)
    (tmp_path / 'b' / 'train_000003.bin').write_bytes((tmp_path / 'b' / 'train_000002.bin').read_bytes())
    with pytest.raises(SystemExit, match=r'train_000003.bin was not written by the prepare that wrote meta.json'):
        Dataset(str(tmp_path / 'b'), note=lambda _: None)


def test_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r'no train data in .*: write'):
        TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16)
    # a dataset folder of the repository with its prepare script (here a stand-in repository, never prepared)
    from nanogpt import tokenfiles
    repo = tmp_path / 'repo'
    (repo / 'data' / 'openwebtext').mkdir(parents=True)
    (repo / 'data' / 'openwebtext' / 'prepare.py').write_text('')
    monkeypatch.setattr(tokenfiles, 'REPO_DIR', str(repo))
    with pytest.raises(SystemExit, match=r'no train data in .*openwebtext.*: run python data/openwebtext/prepare.py$'):
        TokenLoader(Dataset(str(repo / 'data' / 'openwebtext')), 'train', 4, 16)
    # a misspelt dataset: the folder of the closest name, as a name inside data/ and as a path elsewhere
    with pytest.raises(SystemExit, match=r'there is no such folder: did you mean --dataset=openwebtext\?$'):
        Dataset(str(repo / 'data' / 'open-webtext'))
    (tmp_path / 'chardata').mkdir()
    (tmp_path / 'chardata' / 'train.bin').write_bytes(bytes(200))
    (tmp_path / 'char_data_run').mkdir()  # a run's folder, nearer in name: no dataset, never suggested
    (tmp_path / 'char_data_run' / 'ckpt.pt').write_bytes(b'')
    with pytest.raises(SystemExit, match=rf'did you mean --dataset={tmp_path}/chardata\?$'):
        Dataset(str(tmp_path / 'char_data'))
    with pytest.raises(SystemExit, match=r': write .*train.bin and val.bin'):  # nothing close: what to write
        Dataset(str(tmp_path / 'zzzzzz'))
    make_split(tmp_path, n=10)
    with pytest.raises(SystemExit, match='too few for one block of 16'):
        TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16)
    make_split(tmp_path, n=1000, vocab=300)
    with pytest.raises(SystemExit, match='outside the model.s vocabulary of 256'):
        TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16, vocab_size=256)
    with open(tmp_path / 'train.bin', 'ab') as f:
        f.write(b'\x00')
    with pytest.raises(SystemExit, match='odd size'):
        TokenLoader(Dataset(str(tmp_path)), 'train', 4, 16)

