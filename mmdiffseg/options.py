"""Options read strictly: each argument of a generator or the engine is checked once, where it is
given.

Configs and ``--cfg-options`` hand the constructors strings, floats and lists; a value that would
run but mean nothing (a NaN threshold, ``use_cluster='no'``, 36.9 clusters, a KL threshold of 0)
is refused with the generator, the option, the range it must be in and the value, before any
model loads.
"""
from __future__ import annotations

import math
import numbers
import string
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .names import nearest

__all__ = ['check_choice', 'check_flag', 'check_key_among', 'check_real', 'check_reals',
           'check_seed', 'check_template', 'check_token_offsets', 'check_whole', 'check_wholes',
           'template_problem']


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f'in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
    if low is not None:
        return f'{">" if low_open else ">="} {low}'
    if high is not None:
        return f'{"<" if high_open else "<="} {high}'
    return '(finite)'


def _in_range(value: float, low, high, low_open: bool, high_open: bool) -> bool:
    if not math.isfinite(value):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def _plain(value):
    """A numpy array or scalar, or a torch tensor, as the Python value(s) it holds."""
    return value.tolist() if hasattr(value, 'tolist') and not isinstance(value, (str, bytes)) \
        else value


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_real(owner: str, name: str, value, low: Optional[float] = None,
               high: Optional[float] = None, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a finite float in the range (bounds inclusive unless ``*_open``)."""
    value = _plain(value)
    if not _is_number(value) or not _in_range(float(value), low, high, low_open, high_open):
        raise ValueError(f'{owner}: {name} must be a number '
                         f'{_range_text(low, high, low_open, high_open)}, got {value!r}')
    return float(value)


def check_whole(owner: str, name: str, value, low: Optional[int] = None,
                high: Optional[int] = None) -> int:
    """``value`` as an int in ``[low, high]``: an int, or a float without a fraction (36.9
    clusters is refused, not truncated)."""
    value = _plain(value)
    whole = _is_number(value) and math.isfinite(float(value)) and float(value).is_integer()
    if not whole or not _in_range(float(value), low, high, False, False):
        raise ValueError(f'{owner}: {name} must be a whole number '
                         f'{_range_text(low, high, False, False)}, got {value!r}')
    return int(value)


def check_seed(owner: str, name: str, value) -> int:
    """A random seed: a whole number in [-2**63, 2**64 - 1], the seeds
    ``torch.Generator.manual_seed`` takes (a larger one failed at the first draw, after the model
    had loaded)."""
    seed = check_whole(owner, name, value)
    if not -2 ** 63 <= seed < 2 ** 64:
        raise ValueError(f'{owner}: {name} must be a whole number in [-2**63, 2**64 - 1] (a seed '
                         f'of torch.Generator), got {value!r}')
    return seed


def _sequence(owner: str, name: str, values, example: str) -> List:
    values = _plain(values)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f'{owner}: {name} must be a list (e.g. {name}={example}), '
                         f'got {values!r}')
    return list(values)


def check_reals(owner: str, name: str, values, example: str, **bounds) -> Tuple[float, ...]:
    """A list of numbers, each as :func:`check_real` (the error names its index)."""
    return tuple(check_real(owner, f'{name}[{i}]', v, **bounds)
                 for i, v in enumerate(_sequence(owner, name, values, example)))


def check_wholes(owner: str, name: str, values, example: str, **bounds) -> Tuple[int, ...]:
    """A list of whole numbers, each as :func:`check_whole` (the error names its index)."""
    return tuple(check_whole(owner, f'{name}[{i}]', v, **bounds)
                 for i, v in enumerate(_sequence(owner, name, values, example)))


def check_choice(owner: str, name: str, value, choices: Sequence, meanings: str = ''):
    """``value`` if it is one of ``choices``; ``meanings`` (what each does) joins the error."""
    if value in choices:
        return value
    raise ValueError(f'{owner}: {name} must be one of {tuple(choices)}'
                     f"{f' ({meanings})' if meanings else ''}, got {value!r}")


def check_flag(owner: str, name: str, value) -> bool:
    """A bool (``True``/``False``, numpy's, or 0/1): ``bool('false')`` would be True."""
    value = _plain(value)
    if isinstance(value, (bool, np.bool_)) or (_is_number(value) and value in (0, 1)):
        return bool(value)
    raise ValueError(f'{owner}: {name} must be True or False, got {value!r}')


def template_problem(value, field: str = '', optional: Sequence[str] = ()) -> Optional[str]:
    """Why ``value`` is no prompt template with one replacement field ``{field}`` (``''``: ``{}``)
    for the class names and others only from ``optional`` (``str.format`` would fail on it at the
    first batch), or None."""
    slot = '{' + field + '}'
    if not isinstance(value, str):
        return f'it is a {type(value).__name__}, not a string with {slot} for the class names'
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:  # an unmatched brace
        return f'{exc}; write literal braces as {{{{ and }}}}'
    if fields.count(field) == 1 and set(fields) <= {field, *optional}:
        return None
    others = f' and otherwise only {", ".join("{" + f + "}" for f in optional)}' if optional else ''
    return (f'it must hold exactly one {slot} (the class names){others}, it has {len(fields)} '
            'field(s)' + (f': {["{" + f + "}" for f in fields]}' if any(fields) else '')
            + f'; e.g. "a photo of a {slot}"')


def check_template(owner: str, name: str, value, field: str, optional: Sequence[str] = ()) -> str:
    """``value`` if it is a prompt template (:func:`template_problem`), else a ValueError."""
    problem = template_problem(value, field, optional)
    if problem:
        raise ValueError(f'{owner}: {name} {value!r}: {problem}')
    return value


def check_key_among(owner: str, option: str, key, names: Sequence[str], what: str) -> None:
    """Refuse a key of the mapping ``option`` that is not among ``names`` (``what`` they are),
    naming the nearest: a misspelt key would silently leave its class at its default."""
    if key not in names:
        near = nearest(str(key), list(names))
        raise ValueError(f'{owner}: {option} names {key!r}, which is not one of the {what}'
                         + (f' (did you mean {near!r}?)' if near else f': {", ".join(names)}'))


def check_token_offsets(owner: str, offsets, names: Sequence[str], what: str) -> dict:
    """``{name: [offsets]}`` with each name among ``names`` (``what`` they are, for the error:
    a misspelt key would silently leave that class at its default tokens) and each list of
    offsets non-empty and non-negative."""
    checked = {}
    for name, values in dict(offsets or {}).items():
        check_key_among(owner, 'token_offsets', name, names, what)
        checked[name] = list(check_wholes(owner, f'token_offsets[{name!r}]', values, '[0]',
                                          low=0))
        if not checked[name]:
            raise ValueError(f'{owner}: token_offsets[{name!r}] is empty; give the offsets of '
                             'the tokens to read, e.g. [0] for the first')
    return checked
