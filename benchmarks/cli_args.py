"""Argument types the benchmark scripts share, so that a value that would measure nothing is refused
by the parser (exit 2, naming the option), before any model is built: a count of 0 or less (else
a traceback after minutes of set-up, or, read as ``args.x or default``, the default in silence;
the offline tools' ``positive_int``, and ``count`` where 0 means something) and a misspelt name
in a comma-separated list (else a step that measures nothing and exits 0)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, List, Sequence

# the offline tools' integer types (argparse alone), so a count reads the same everywhere
sys.path.append(str(Path(__file__).resolve().parents[1] / 'tools'))
from offline_args import count, positive_int  # noqa: E402,F401


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
