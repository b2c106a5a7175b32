"""Results files of the benchmarks: one markdown file per benchmark, one section per run."""
from __future__ import annotations

import math
import os
import platform
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Sequence


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform`` says only ``x86_64``)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_description() -> str:
    """The host for the benchmarks of host work: ``'AMD EPYC, 2 CPUs'``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return f'{cpu_model()}, {cpus} CPUs'


def hardware(device: str, threads: int) -> str:
    """What ran a benchmark: ``'cuda (NVIDIA H200)'``, ``'cpu (AMD EPYC), 1 thread(s)'``; the
    rows of one hardware replace each other (:func:`kept_rows`), whatever the torch version."""
    import torch
    if torch.device(device).type == 'cuda':
        return f'{device} ({torch.cuda.get_device_name(device)})'
    return f'cpu ({cpu_model()}), {threads} thread(s)'


def device_description(device: str, threads: int) -> str:
    """:func:`hardware` and the torch version: every benchmark's device cell or heading."""
    import torch
    return f'{hardware(device, threads)}, torch {torch.__version__}'


def directed(value: float, decimals: int, up: bool) -> str:
    """``value`` with ``decimals`` decimals, rounded up (``up``) or down instead of to the nearest:
    a figure that a target reads (``targets.py``) is rounded towards missing it (a speed-up
    down, a cost up), so that rounding never meets a target that the measurement missed (19.96x
    printed as 20.0x met '>= 20x'); a limit with no more decimals is met or missed as measured."""
    if not math.isfinite(value):
        return str(value)
    step = Decimal(1).scaleb(-decimals)
    rounding = ROUND_CEILING if up else ROUND_FLOOR
    return str(Decimal(repr(float(value))).quantize(step, rounding=rounding))  # numpy too


def significant(value: float, digits: int, up: bool) -> str:
    """``value`` to ``digits`` significant digits, rounded as :func:`directed` rounds."""
    if not math.isfinite(value) or not value:
        return directed(value, digits - 1, up)
    return directed(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))), up)


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


def kept_rows(out: Path, prefix: str, device: str, workload: str, rows: Sequence[str]) -> list:
    """The rows of ``out``'s table (lines starting ``prefix``) that a rerun keeps: other devices'
    (no ``| device |`` or ``| device, torch ...`` cell: ``device`` is :func:`hardware`), this
    device's of settings (first cell) not in ``rows``, and this device's of another workload (a
    row without ``workload`` in it: a smoke run with fewer cases replaces no full run's row)."""
    measured = {row.split(' | ')[0] for row in rows}

    def replaced(line: str) -> bool:
        ours = f'| {device} |' in line or f'| {device}, torch ' in line
        return ours and line.split(' | ')[0] in measured and workload in line
    lines = out.read_text().splitlines() if out.exists() else []
    return [line for line in lines if line.startswith(prefix) and not replaced(line)]
