"""Results files of the benchmarks: one markdown file per benchmark, one section per run."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def append_section(out: Path, title: str, intro: str, heading: str, columns: Sequence[str],
                   rows: Sequence[str]) -> None:
    """Appends ``### heading`` and a table (``columns``, then ``rows`` already formatted as
    ``| a | b |``) to ``out``; a new file starts with ``# title`` and ``intro``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with open(out, 'a') as f:
        if new:
            f.write(f'# {title}\n\n{intro}\n')
        f.write(f'\n### {heading}\n\n| ' + ' | '.join(columns) + ' |\n|'
                + '---|' * len(columns) + '\n' + '\n'.join(rows) + '\n')
    print(f'appended to {out}')
