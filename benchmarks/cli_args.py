"""Argument types the benchmark scripts share, so that a value that would measure nothing is refused
by the parser (exit 2, naming the option), before any model is built: a count of 0 or less (else
a traceback after minutes of set-up, or, read as ``args.x or default``, the default in silence)
and a misspelt name in a comma-separated list (else a step that measures nothing and exits 0)."""
from __future__ import annotations

import argparse
from typing import Callable, List, Sequence


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None


def positive_int(text: str) -> int:
    """A count: an integer of at least 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: must be at least 1')
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (where 0 means something: no workers, no batched row)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text!r}: must be at least 0')
    return value


def comma_names(valid: Sequence[str]) -> Callable[[str], List[str]]:
    """A comma-separated list of names out of ``valid`` (at least one; unknown ones are named with
    the valid ones)."""
    def parse(text: str) -> List[str]:
        names = [name.strip() for name in text.split(',') if name.strip()]
        unknown = [name for name in names if name not in valid]
        if unknown or not names:
            what = f'unknown {", ".join(map(repr, unknown))}' if unknown else 'no name given'
            raise argparse.ArgumentTypeError(
                f'{what}; give a comma-separated list of {", ".join(valid)}')
        return list(dict.fromkeys(names))
    return parse
