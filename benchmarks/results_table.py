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


def append_row(out: Path, row: str, preamble: str, header: str) -> None:
    """Appends ``row`` to ``out`` under a table: ``header`` (the column line and its ``|---`` line)
    goes first where the file does not end in a table (a row, or a header that a run cut short
    before its first row left), and a new file starts with ``preamble``. The header lands with a
    row only, so a run that fails before its first row leaves the file as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = out.read_text() if out.exists() else ''
    last = (text.rstrip('\n').splitlines() or [''])[-1]
    with open(out, 'a') as f:
        if not text:
            f.write(preamble.rstrip('\n') + '\n' if preamble else '')
        elif not text.endswith('\n'):
            f.write('\n')
        if not last.startswith('|'):
            f.write(('\n' if text or preamble else '') + header.rstrip('\n') + '\n')
        f.write(row + '\n')


def kept_rows(out: Path, prefix: str, device: str, rows: Sequence[str]) -> list:
    """The rows of ``out``'s table (lines starting ``prefix``) that a rerun keeps: other devices'
    (no ``| device |`` cell), and this device's of settings (first cell) not in ``rows``."""
    measured = {row.split(' | ')[0] for row in rows}
    lines = out.read_text().splitlines() if out.exists() else []
    return [line for line in lines if line.startswith(prefix)
            and (f'| {device} |' not in line or line.split(' | ')[0] not in measured)]
