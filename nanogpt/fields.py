"""
The fields of the files the project reads (ckpt.pt, a Hugging Face config.json, a dataset's meta.json, log.jsonl
records, HellaSwag rows), checked by the reader of each kind before any field is used: a damaged or hand-edited file
is refused in one line that names the file, the field, what it holds and what to do, instead of reaching the code
(a string where a bool belongs would count as true). Torch-free: a tensor is recognised by its type's name.

A spec maps each field a reader uses to (what it must be, a test of the value); check() applies one.
"""
import reprlib


def _number(v) -> bool:
    return type(v) in (int, float)


def positive_int(v) -> bool:
    return type(v) is int and 0 < v < 2**63


def text(v) -> bool:
    """A string that is text: no lone surrogate (JSON's \\ud800), which no file or terminal can take."""
    if not isinstance(v, str):
        return False
    try:
        v.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


def count(v) -> bool:
    return type(v) is int and 0 <= v < 2**63  # what an int64 holds, as torch and numpy count


def tensors(v) -> bool:
    return isinstance(v, dict) and all(type(t).__name__ in ('Tensor', 'Parameter') for t in v.values())


POSITIVE_INT = ('an integer above 0 (below 2**63)', positive_int)
COUNT = ('an integer, 0 or more (below 2**63)', count)
NUMBER = ('a number', _number)
NOT_NEGATIVE = ('a number, not negative', lambda v: _number(v) and not v < 0)  # NaN and inf are (a diverged run's)
BOOL = ('true or false', lambda v: type(v) is bool)
STR = ('a string of text', text)
DICT = ('a dict', lambda v: isinstance(v, dict))
TENSORS = ('a dict of tensors', tensors)
FRACTION = ('a number in [0, 1)', lambda v: _number(v) and 0 <= v < 1)
CHARS = ('distinct characters (a string or a list of them), or none', lambda v: v is None or (
    isinstance(v, (str, list, tuple)) and all(text(c) and len(c) == 1 for c in v) and len(set(v)) == len(v)))


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 60, 60


def _show(value) -> str:
    text = _repr.repr(value) if type(value).__name__ not in ('Tensor', 'Parameter') else \
        f"a tensor {tuple(value.shape)}"  # a list nested 5,000 deep too
    return text if len(text) <= 60 else text[:57] + '...'


def check(data, spec: dict, source: str, fix: str, required=()):
    """SystemExit naming the first field of data (a dict read from source) that is missing (of required) or not what
    spec says it must be; fix says what to do."""
    if not isinstance(data, dict):
        raise SystemExit(f"error: {source} holds {_show(data)}, not the dict of fields it should: {fix}")
    for field, (what, ok) in spec.items():
        if field not in data:
            if field in required:
                raise SystemExit(f"error: {source} has no {field!r} (it must be {what}): {fix}")
        elif not ok(data[field]):
            raise SystemExit(f"error: {source}: {field!r} holds {_show(data[field])}, where it must be {what}: {fix}")
