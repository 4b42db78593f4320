"""
One check per kind of file read (nanogpt/fields.py, applied by the reader of each kind): every field the code uses
of ckpt.pt, a GPT-2 config.json, a dataset's meta.json, a log.jsonl record and a HellaSwag row is damaged in turn,
and each is refused in one line naming the file and the field (a log record is dropped, with a note), never reaching
the code.
"""
import json
import math
import os
import re
import types

import pytest
import torch
from conftest import REPO, one_line_error, train

from nanogpt import checkpoint as ckpt_module
from nanogpt import fields, runlog, tokenfiles, weights

CANDIDATES = ['yes', 3, -1, None, [1], 1.5, 'aa', {'a': 1}]


def bad(spec_entry):
    """A value the field's test refuses: a damaged or hand-edited file's."""
    return next(v for v in CANDIDATES if not spec_entry[1](v))


@pytest.fixture(scope='module')
def checkpoint_path(char_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('ckpt')
    train(char_data, out, '--max_iters=2', '--eval_interval=2')
    return out / 'ckpt.pt'


def refused(call, *fragments):
    with pytest.raises(SystemExit) as e:
        call()
    line = str(e.value.code)
    assert line.startswith('error: ') and '\n' not in line, line
    for fragment in fragments:
        assert fragment in line, line


def damaged_checkpoints(path):
    original = torch.load(path, weights_only=True)
    for field, entry in ckpt_module.CHECKPOINT.items():
        yield field, {**original, field: bad(entry)}
    for field, entry in ckpt_module.MODEL_ARGS.items():
        yield f"model_args {field}", {**original, 'model_args': {**original['model_args'], field: bad(entry)}}
    for field, entry in ckpt_module.CONFIG.items():
        yield f"config {field}", {**original, 'config': {**original['config'], field: bad(entry)}}
    for field in ('model', 'model_args', *ckpt_module.TRAINING):
        yield f"no {field}", {k: v for k, v in original.items() if k != field}
    yield 'model_args n_embd % n_head', {**original, 'model_args': {**original['model_args'], 'n_head': 3}}


def test_every_field_of_a_checkpoint_damaged_in_turn_is_refused(checkpoint_path, tmp_path):
    path = tmp_path / 'ckpt.pt'
    for what, damaged in damaged_checkpoints(checkpoint_path):
        torch.save(damaged, path)
        field = what.split()[-1] if not what.startswith('model_args n_embd') else 'n_embd'
        refused(lambda: ckpt_module.load_checkpoint(str(path), ('model', 'model_args') + ckpt_module.TRAINING),
                str(path), field)
    # what sampling needs is only the model: a checkpoint without its training state still samples
    torch.save({k: v for k, v in torch.load(checkpoint_path, weights_only=True).items() if k != 'optimizer'}, path)
    assert ckpt_module.load_checkpoint(str(path))['iter_num'] == 2


def test_every_field_of_a_config_json_damaged_in_turn_is_refused():
    good = dict(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=50, model_type='gpt2',
                activation_function='gelu_new', layer_norm_epsilon=1e-5, n_inner=None, scale_attn_weights=True,
                scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False)
    assert weights.config_args_from_hf(good, 'folder')['block_size'] == 16
    for field, entry in weights.HF_CONFIG.items():
        refused(lambda: weights.config_args_from_hf({**good, field: bad(entry)}, 'folder'), 'folder config.json',
                repr(field))
    # a value of the right type that this GPT cannot reproduce: an lm_head untied from wte
    with pytest.raises(ValueError, match='tie_word_embeddings=False is not supported'):
        weights.config_args_from_hf({**good, 'tie_word_embeddings': False}, 'folder')
    for field in weights.HF_REQUIRED:
        refused(lambda: weights.config_args_from_hf({k: v for k, v in good.items() if k != field}, 'folder'),
                f"has no {field!r}")


def test_every_field_of_a_meta_json_damaged_in_turn_is_refused(char_data, tmp_path):
    with open(os.path.join(char_data, 'meta.json')) as f:
        good = json.load(f)
    assert tokenfiles.read_meta(char_data) == good
    for field, entry in tokenfiles.META.items():
        (tmp_path / 'meta.json').write_text(json.dumps({**good, field: bad(entry)}))
        refused(lambda: tokenfiles.read_meta(str(tmp_path)), 'meta.json', repr(field), 'prepare the dataset again')


def test_a_log_record_with_a_damaged_field_is_dropped_with_a_note(tmp_path):
    good = {'iter': 5, 'loss': 2.5, 'lr': 1e-3, 'grad_norm': 0.5, 'ms': 40.0, 'tok_per_s': 1000.0, 'mfu': None}
    lines = [json.dumps(good)]
    for field, entry in runlog.RECORD.items():
        lines.append(json.dumps({**good, field: bad(entry)}))
    (tmp_path / 'log.jsonl').write_text('\n'.join(lines) + '\n')
    notes = []
    assert runlog.read_records(str(tmp_path / 'log.jsonl'), note=notes.append) == [good]
    assert len(notes) == 1 and 'line(s) 2, 3, 4, 5, 6 and' in notes[0] and notes[0].endswith('skipped')
    # values of the right type that no run writes: a negative loss or rate, an iteration beyond int64
    (tmp_path / 'log.jsonl').write_text('\n'.join(json.dumps({**good, **odd}) for odd in (
        {}, {'loss': -5.0}, {'lr': -1}, {'iter': 10**29}, {'loss': float('nan')})) + '\n')
    records = runlog.read_records(str(tmp_path / 'log.jsonl'), note=notes.append)
    assert len(records) == 2 and math.isnan(records[1]['loss'])  # a diverged run's NaN is a record
    assert 'line(s) 2, 3, 4 are not records' in notes[-1]


def test_every_field_of_a_hellaswag_row_damaged_in_turn_is_refused(tmp_path):
    from hellaswag import ROW, load_examples
    good = {'ctx': 'He opens the door.', 'endings': ['a.', 'b.', 'c.', 'd.'], 'label': 2}
    path = tmp_path / 'h.jsonl'
    path.write_text(json.dumps(good) + '\n')
    assert load_examples(str(path)) == [good]
    for field, entry in ROW.items():
        path.write_text(json.dumps(good) + '\n' + json.dumps({**good, field: bad(entry)}) + '\n')
        refused(lambda: load_examples(str(path)), f'{path}:2', repr(field))
        path.write_text(json.dumps({k: v for k, v in good.items() if k != field}) + '\n')
        refused(lambda: load_examples(str(path)), f'{path}:1', f'has no {field!r}')


def test_a_field_check_names_what_the_value_is():
    spec = {'n_layer': fields.POSITIVE_INT}
    refused(lambda: fields.check({'n_layer': 'twelve'}, spec, 'x.json', 'fix it'),
            "error: x.json: 'n_layer' holds 'twelve', where it must be an integer above 0 (below 2**63): fix it")
    refused(lambda: fields.check({'n_layer': True}, spec, 'x.json', 'fix it'), "holds True")  # a bool is no int
    refused(lambda: fields.check([1], spec, 'x.json', 'fix it'), "x.json holds [1], not the dict")
    nested = []
    for _ in range(5000):
        nested = [nested]
    refused(lambda: fields.check({'n_layer': nested}, spec, 'x.json', 'fix it'), "holds [[[[...]]]], where")


@pytest.mark.parametrize('case', ['missing', 'empty-path', 'folder', 'fifo', 'latin-1'])
def test_a_text_file_handed_over_is_read_or_refused_in_one_line_naming_it(tmp_path, case):
    # every text a user hands over (a prompt file, perplexity's text, a prepare's input, HellaSwag rows) is read here
    from nanogpt.files import read_text
    path = '' if case == 'empty-path' else str(tmp_path / 'given.txt')
    if case == 'folder':
        os.mkdir(path)
    elif case == 'fifo':
        os.mkfifo(path)  # would wait forever for a writer
    elif case == 'latin-1':
        open(path, 'wb').write('café'.encode('latin-1'))
    says = {'missing': 'not found', 'empty-path': "prompt file '' not found", 'folder': 'is a folder',
            'fifo': 'is a FIFO', 'latin-1': 'is not UTF-8 text'}[case]
    with pytest.raises(SystemExit, match=re.escape(says)) as e:
        read_text(path, 'prompt file')
    assert path in str(e.value) and '\n' not in str(e.value)


def test_a_text_file_with_a_byte_order_mark_reads_without_it(tmp_path):
    from nanogpt.files import read_text
    (tmp_path / 'bom.txt').write_bytes('\ufeffhello'.encode('utf-8'))
    assert read_text(str(tmp_path / 'bom.txt')) == 'hello'


@pytest.mark.parametrize('reader', ['config.json', 'meta.json'])
def test_a_json_file_handed_over_reads_with_a_byte_order_mark_and_is_refused_in_one_line_when_not_json(tmp_path,
                                                                                                       reader):
    # every JSON file read (a model's config.json, a dataset's meta.json) passes nanogpt.files.read_json
    from nanogpt.tokenfiles import read_meta
    from nanogpt.weights import read_folder
    read = {'config.json': lambda: read_folder(str(tmp_path)), 'meta.json': lambda: read_meta(str(tmp_path))}[reader]
    body = {'config.json': {'n_layer': 1}, 'meta.json': {'tokenizer': 'gpt2', 'vocab_size': 0}}[reader]
    (tmp_path / reader).write_bytes(b'\xef\xbb\xbf' + json.dumps(body).encode())  # as Notepad saves it
    with pytest.raises(SystemExit, match='n_head|vocab_size') as e:  # read: its fields are what is refused
        read()
    assert 'valid JSON' not in str(e.value)
    (tmp_path / reader).write_text('{"n_layer": 1,')  # cut short
    with pytest.raises(SystemExit, match=re.escape(f"{tmp_path / reader} is not valid JSON")) as e:
        read()
    assert '\n' not in str(e.value)


def test_every_file_the_project_reads_opens_through_the_readers_of_nanogpt_files():
    # a bare open() outside nanogpt/files.py is a write to atomic_path's temporary file, never a read
    sources = ['train.py', 'sample.py', 'bench.py', 'hellaswag.py', 'perplexity.py', 'export_hf.py', 'plot.py',
               *(f'nanogpt/{f}' for f in os.listdir(os.path.join(REPO, 'nanogpt')) if f.endswith('.py')),
               *(f'data/{d}/prepare.py' for d in os.listdir(os.path.join(REPO, 'data'))
                 if os.path.exists(os.path.join(REPO, 'data', d, 'prepare.py')))]
    for source in sources:
        if source != 'nanogpt/files.py':
            for m in re.finditer(r"(?<![\w.])open\(([^,)]+)", open(os.path.join(REPO, source)).read()):
                assert m.group(1) in ('tmp', 'self._atomic.__enter__('), f"{source}: {m.group(0)}"


def weights_damaged(path):
    """What load_model reads of a checkpoint's weights, damaged in turn: (what, checkpoint, what the line says)."""
    original = torch.load(path, weights_only=True)
    model = original['model']
    name = next(k for k in model if k.endswith('attn.c_attn.weight'))
    yield 'nan', {**original, 'model': {**model, name: torch.full_like(model[name], float('nan'))}}, \
        f'weight {name} holds NaN or inf'
    yield 'missing', {**original, 'model': {k: v for k, v in model.items() if k != 'transformer.ln_f.weight'}}, \
        'it lacks transformer.ln_f.weight'
    yield 'shape', {**original, 'model': {**model, name: model[name][:, :-1]}}, \
        f'{name} is {tuple(model[name][:, :-1].shape)}, not {tuple(model[name].shape)}'
    args = {k: v for k, v in original['model_args'].items() if k != 'bias'}
    biased = {**original, 'model_args': args, 'model': {k: v for k, v in model.items() if not k.endswith('.bias')}}
    yield 'no-bias-field', biased, "model_args has no 'bias'"
    yield 'int8', {**original, 'model': {k: v.to(torch.int8) for k, v in model.items()}}, 'is int8, not a float32'
    yield 'float8', {**original, 'model': {**model, name: model[name].to(torch.float8_e4m3fn)}}, \
        f'weight {name} is float8_e4m3fn, not a float32'
    yield 'sparse', {**original, 'model': {**model, name: model[name].to_sparse()}}, \
        f'weight {name} is a sparse_coo tensor'
    untied = {**model, 'lm_head.weight': model['lm_head.weight'] + 1}
    yield 'untied', {**original, 'model': untied}, 'lm_head.weight differs from transformer.wte.weight'


def test_a_hugging_face_weights_file_with_weights_gpt2_has_not_or_an_untied_head_is_refused():
    # as a ckpt.pt's are: an extra weight was ignored, an lm_head unlike wte dropped in silence
    from model import GPT, GPTConfig
    from nanogpt.weights import hf_state_dict, read_weights
    raw = hf_state_dict(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16)), 16)
    assert 'lm_head.weight' not in read_weights('model.safetensors', dict(raw))  # tied: read as wte
    refused(lambda: read_weights('model.safetensors', {**raw, 'h.0.attn.rotary.weight': torch.zeros(2)}),
            'model.safetensors holds weights GPT-2 has not (transformer.h.0.attn.rotary.weight)')
    refused(lambda: read_weights('model.safetensors', {**raw, 'lm_head.weight': raw['transformer.wte.weight'] + 1}),
            'lm_head.weight differs from transformer.wte.weight')
    read_weights('model.safetensors', {**raw, 'lm_head.weight': raw['transformer.wte.weight'].clone()})  # tied, twice


def test_a_checkpoint_cut_short_anywhere_or_of_another_format_is_damaged_in_one_line(checkpoint_path, tmp_path):
    from safetensors.torch import save_file

    from nanogpt.weights import torch_load
    data = open(checkpoint_path, 'rb').read()
    for n in sorted({10, 100, 1000, 4000, 5000, 8000, 20000, 60000, len(data) // 2, len(data) - 1}):
        if n < len(data):
            (tmp_path / 'ckpt.pt').write_bytes(data[:n])
            refused(lambda: torch_load(str(tmp_path / 'ckpt.pt'), 'checkpoint'), 'the file is damaged')
    save_file({'w': torch.zeros(3)}, str(tmp_path / 'ckpt.pt'))  # a safetensors file named ckpt.pt
    with pytest.raises(SystemExit) as e:
        torch_load(str(tmp_path / 'ckpt.pt'), 'checkpoint')
    assert 'not a PyTorch checkpoint' in str(e.value) and 'weights_only' not in str(e.value)  # no advice to unsafe


def test_a_checkpoint_of_a_ddp_wrapped_compiled_model_loads(checkpoint_path, tmp_path):
    original = torch.load(checkpoint_path, weights_only=True)
    (tmp_path / 'out').mkdir()
    torch.save({**original, 'model': {f'module._orig_mod.{k}': v for k, v in original['model'].items()}},
               tmp_path / 'out' / 'ckpt.pt')
    model, _ = ckpt_module.load_model('resume', str(tmp_path / 'out'))
    assert torch.equal(model.state_dict()['transformer.wte.weight'], original['model']['transformer.wte.weight'])


def test_every_weight_damage_of_a_checkpoint_is_one_line_before_use(checkpoint_path, tmp_path):
    # a model with NaN weights would sample blank text, or train on NaN; missing or misshapen ones fail in torch
    (tmp_path / 'out').mkdir()
    for what, damaged, says in weights_damaged(checkpoint_path):
        torch.save(damaged, tmp_path / 'out' / 'ckpt.pt')
        refused(lambda: ckpt_module.load_model('resume', str(tmp_path / 'out')), 'ckpt.pt', says)


@pytest.mark.parametrize('part, damage, says', [
    ('rng', lambda ck: ck.update(rng={0: {'cpu': 'garbage'}}), "its 'rng' state does not load (TypeError"),
    ('rng', lambda ck: ck.update(rng={0: {}}), "its 'rng' state does not load (KeyError"),
    ('optimizer', lambda ck: ck['optimizer'].update(param_groups='x'), "its 'optimizer' state does not load"),
    ('optimizer', lambda ck: next(iter(ck['optimizer']['state'].values())).update(exp_avg=torch.zeros(3, 3)),
     "exp_avg of parameter 0 is (3, 3), not"),
    ('optimizer', lambda ck: ck['optimizer']['param_groups'][0].update(betas=('a', 'b')),
     "param group 0's betas is ('a', 'b'), where this optimizer has (0.9, 0.95)"),
    ('optimizer', lambda ck: ck['optimizer']['param_groups'][0].update(eps=float('nan')),
     "param group 0's eps is nan, where this optimizer has 1e-08"),
], ids=['rng-values', 'rng-empty', 'optimizer-groups', 'optimizer-moment-shape', 'optimizer-betas', 'optimizer-eps'])
def test_a_damaged_training_state_is_one_line_at_resume(checkpoint_path, tmp_path, char_data, part, damage, says):
    # the insides of the optimizer and RNG states are torch's: their loading is their check, and says which part
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    damage(checkpoint)
    (tmp_path / 'out').mkdir()
    torch.save(checkpoint, tmp_path / 'out' / 'ckpt.pt')
    proc = train(char_data, tmp_path / 'out', '--max_iters=4', '--init_from=resume', check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert says in proc.stderr.strip().splitlines()[-1] and 'resume from a copy' in proc.stderr, proc.stderr[-1000:]


def test_a_meta_json_that_does_not_agree_with_itself_is_refused(char_data, tmp_path):
    with open(os.path.join(char_data, 'meta.json')) as f:
        good = json.load(f)
    for edit in ({'vocab_size': good['vocab_size'] + 1}, {'tokenizer': 'gpt2'}, {'chars': good['chars'][:-1]}):
        (tmp_path / 'meta.json').write_text(json.dumps({**good, **edit}))
        refused(lambda: tokenfiles.read_meta(str(tmp_path)), 'does not agree with itself', 'prepare the dataset again')


def test_a_vocabulary_whose_two_files_or_two_halves_disagree_is_refused(char_data, tmp_path):
    import pickle
    import shutil
    data = tmp_path / 'data'
    shutil.copytree(char_data, data)
    meta = json.loads((data / 'meta.json').read_text())
    swapped = meta['chars'][1] + meta['chars'][0] + meta['chars'][2:]  # two characters trade places
    (data / 'meta.json').write_text(json.dumps({**meta, 'chars': swapped}))
    refused(lambda: tokenfiles.Dataset(str(data), note=lambda _: None), 'the characters of meta.json and meta.pkl '
            'differ')
    (data / 'meta.json').unlink()  # nanoGPT's layout: meta.pkl alone, whose stoi must invert its itos
    pkl = pickle.loads((data / 'meta.pkl').read_bytes())
    pkl['stoi'] = {ch: i for i, ch in enumerate(swapped)}
    (data / 'meta.pkl').write_bytes(pickle.dumps(pkl))
    refused(lambda: tokenfiles.read_vocab(str(data)), 'its stoi and itos disagree')


def test_token_files_that_are_not_raw_tokens_of_the_datasets_vocabulary_are_refused(tmp_path):
    import numpy as np
    tokens = np.arange(1000, dtype=np.uint16) % 50
    for split in ('train', 'val'):
        np.save(tmp_path / f'{split}.npy', tokens)
        (tmp_path / f'{split}.npy').rename(tmp_path / f'{split}.bin')  # build-nanogpt's shards, renamed
    refused(lambda: tokenfiles.Dataset(str(tmp_path), note=lambda _: None), 'is a numpy .npy file')
    for split in ('train', 'val'):
        np.append(tokens, 50300).astype(np.uint16).tofile(tmp_path / f'{split}.bin')
    tokenfiles.write_meta(str(tmp_path), tokenizer='gpt2', vocab_size=50257, tokens={'train': 1001, 'val': 1001})
    data = tokenfiles.Dataset(str(tmp_path))
    refused(lambda: data.check_ids('train', 50304), "token id 50300, outside the dataset's (meta.json) vocabulary")


@pytest.mark.parametrize('dataset, says', [('', 'dataset is empty'), ('.', 'no train data in .')])
def test_an_empty_or_relative_dataset_is_not_the_repositorys_data_folder(tmp_path, monkeypatch, dataset, says):
    monkeypatch.chdir(tmp_path)
    refused(lambda: tokenfiles.Dataset(tokenfiles.dataset_dir(dataset), note=lambda _: None), says)


def test_a_damaged_meta_json_of_an_export_says_to_export_again(tmp_path):
    (tmp_path / 'config.json').write_text('{}')
    (tmp_path / 'meta.json').write_text('{"tokenizer": "char", "vocab_size": 4, "chars": "abc"}')
    refused(lambda: tokenfiles.read_vocab(str(tmp_path)), 'does not agree with itself', 'export the model again')
    (tmp_path / 'meta.json').write_text(json.dumps({'tokenizer': 'CHAR', 'vocab_size': 2, 'chars': 'ab'}))
    refused(lambda: tokenfiles.read_meta(str(tmp_path)), "'tokenizer' holds 'CHAR'", 'export the model again')


def test_a_compressed_text_file_says_to_decompress_it(tmp_path):
    import gzip
    from nanogpt.files import read_text
    (tmp_path / 'hellaswag_val.jsonl.gz').write_bytes(gzip.compress(b'{"ctx": "x"}\n' * 100))
    refused(lambda: read_text(str(tmp_path / 'hellaswag_val.jsonl.gz'), 'HellaSwag file'), 'gzip-compressed: gunzip it')


def test_a_string_field_must_be_text_and_a_count_fit_int64():
    assert fields.text('ok') and not fields.text('\ud800') and not fields.text(3)  # a lone surrogate: no file takes it
    assert not fields.CHARS[1](['a', '\ud800']) and fields.CHARS[1](['a', 'b'])
    assert fields.positive_int(2**63 - 1) and not fields.positive_int(2**63) and not fields.positive_int(10**400)


def test_hellaswag_rows_are_split_at_newlines_only(tmp_path):
    from hellaswag import load_examples
    row = {'ctx': 'A line\u2028with a separator\x85inside.', 'endings': ['a.', 'b.', 'c.', 'd.'], 'label': 1}
    (tmp_path / 'h.jsonl').write_text(json.dumps(row, ensure_ascii=False) + '\n', encoding='utf-8')
    assert load_examples(str(tmp_path / 'h.jsonl')) == [row]


def test_a_model_folder_with_a_tokenizer_of_its_own_is_refused(tmp_path):
    from nanogpt.weights import check_tokenizer
    (tmp_path / 'vocab.json').write_text(json.dumps({f't{i}': i for i in range(21128)}))
    with pytest.raises(SystemExit, match=r"has a tokenizer of its own \(vocab.json: 21,128 tokens, GPT-2's has "
                                         r"50,257\)"):
        check_tokenizer(str(tmp_path))
    os.remove(tmp_path / 'vocab.json')
    (tmp_path / 'tokenizer.json').write_text(json.dumps({'model': {'vocab': {'a': 0}}}))
    with pytest.raises(SystemExit, match=r"tokenizer.json: 1 tokens"):
        check_tokenizer(str(tmp_path))


def test_a_character_model_naming_no_characters_says_whose_it_takes(capsys):
    from nanogpt.tokenizer import check_tokens
    data = types.SimpleNamespace(tokenizer='char', vocab=list('abc'), dir='data/x')
    check_tokens({'model_args': {'vocab_size': 3}}, 'an export', data)
    assert "note: an export names none of its 3 characters: its ids are taken to mean those of data/x" in \
        capsys.readouterr().out


def test_a_checkpoints_best_val_loss_of_any_tensor_shape_is_a_number(tmp_path):
    from model import GPT, GPTConfig
    from nanogpt.checkpoint import load_checkpoint
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16))
    torch.save({'model': model.state_dict(), 'model_args': {'n_layer': 1, 'n_head': 2, 'n_embd': 8, 'block_size': 8,
                                                            'vocab_size': 16, 'bias': True},
                'best_val_loss': torch.tensor([[1.5]])}, tmp_path / 'ckpt.pt')
    assert load_checkpoint(str(tmp_path / 'ckpt.pt'))['best_val_loss'] == 1.5


def test_a_resume_takes_this_runs_optimizer_settings_and_refuses_a_broken_scaler(char_data, tmp_path):
    out = tmp_path / 'out'
    train(char_data, out, '--max_iters=2', '--eval_interval=2', '--dtype=float16')
    saved = torch.load(out / 'ckpt.pt', weights_only=True)
    resumed = train(char_data, out, '--max_iters=4', '--eval_interval=2', '--dtype=float16', '--init_from=resume',
                    '--beta2=0.9')
    assert "note: resuming with this run's betas=(0.9, 0.9) (the checkpoint's: (0.9, 0.95))" in resumed.stdout
    assert torch.load(out / 'ckpt.pt', weights_only=True)['optimizer']['param_groups'][0]['betas'] == (0.9, 0.9)
    # an older checkpoint without a batch position: said, and the batches start again
    del saved['loader']
    torch.save(saved, out / 'ckpt.pt')
    resumed = train(char_data, out, '--max_iters=4', '--eval_interval=2', '--dtype=float16', '--init_from=resume')
    assert 'holds no position in the batch stream' in resumed.stdout
    # a scaler whose scale is not a number would skip every step as an overflow, without a word
    saved = torch.load(out / 'ckpt.pt', weights_only=True)
    saved['scaler']['scale'] = float('nan')
    torch.save(saved, out / 'ckpt.pt')
    one_line_error(train(char_data, out, '--max_iters=6', '--dtype=float16', '--init_from=resume', check=False),
                   "its 'scaler' state does not load (ValueError: its scale is nan")


def test_a_hub_cache_folder_names_its_snapshot(tmp_path):
    hub = tmp_path / 'models--someone--tiny'
    (hub / 'snapshots' / 'abc123').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"a hub cache folder: pass \S+/snapshots/abc123"):
        weights.read_folder(str(hub))


def test_a_nanogpt_meta_pkl_keyed_by_strings_names_what_it_lacks(tmp_path):
    import pickle
    (tmp_path / 'meta.pkl').write_bytes(pickle.dumps({'vocab_size': 2, 'itos': {'0': 'a', '1': 'b'},
                                                      'stoi': {'a': 0, 'b': 1}}))
    refused(lambda: tokenfiles.read_vocab(str(tmp_path)), 'meta.pkl: its itos has no id 0', "in 'itos'")


def test_a_token_file_given_as_text_or_as_a_model_is_named_for_what_it_is(tmp_path):
    from nanogpt.files import read_text
    (tmp_path / 'train.bin').write_bytes(bytes([0x90, 0xc4, 0, 0, 0xff, 0x12]) * 50)  # BPE ids: no UTF-8, NUL bytes
    refused(lambda: read_text(str(tmp_path / 'train.bin'), 'text file'), 'not text (NUL bytes, and not UTF-8): a '
            'token file?')
    with pytest.raises(FileNotFoundError, match=r"it is a dataset's folder: give it as --dataset"):
        weights.read_folder(str(tmp_path))
