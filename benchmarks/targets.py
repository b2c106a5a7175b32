"""The open issues' GPU targets, checked against the rows of GPU suite runs.

Reads one or more ``results.md`` files written by ``gpu_suite.sh`` (each step's rows under
``### <step>``, with their table's header) and prints one table: issue, target, the row it reads,
the measured figure, and whether the target is met. Rows of fallback paths (the PyTorch or CUDA
graph paths where Triton runs, eager steps where CUDA graphs run) are listed as such, not judged;
so are the rows of the fused PAMR's sweep other than ``fused_propagate``'s default setting (the
default's row is judged). The verdicts on a quick run's rows (``quick=1`` in its heading: tiny
models on a CPU, a smoke run) say that they judge smoke figures, not the targets' measurements.
The suite appends this table to ``results.md`` when its last step has run; for two calls (or a
call cut short), run it on the files fetched:

    python benchmarks/targets.py call1/results.md call2/results.md

Targets (issue #8: attention capture; #9: dataset-scale labelling):

* #8, ``capture`` / ``capture_sd1`` (U-Net only, path ``new``): DiffSeg and iSeg specs at most
  1.10x the plain forward at batch 1 and 16; extra peak memory at most 2x the map buffers.
* #8, ``end_to_end``: SeeDiff's 50-step generation with capture at most 1.05x the plain pipeline;
  DiffSeg and iSeg ``extract`` with capture at most 1.10x.
* #9, ``diffseg``: the released float16 merging at least 20x the released formulation, the
  float32 merging at least 1x.
* #9, ``iseg`` / ``seediff``: every default-path row at least 1x the released formulation;
  SeeDiff's 5000-step PAMR at most 0.2 s an image.
* #9, ``offline_tools``: ``pseudo_label`` at least 90% of the in-process rate at the same batch.
* #9, ``tool_host`` (host work only, so judged on whatever machine ran it; not an ``EXPECTED``
  row, as the suite's second call runs it): the 8-core capacity at least 4x the GPU rate, and the
  capacity growing with the loader workers (the most workers faster than none; no margin is
  stated, so any gain is met and the gain is printed beside the rates).
* ``end_to_end_compile`` (optional): no target; the map backend that captures faster in a compiled
  U-Net, the one ``'auto'`` should take there.
* ``seediff``'s sweep of the fused PAMR's launch settings: no target; the fastest ``(K, T)``
  against ``fused_propagate``'s default, which it should replace where faster.

A target left unjudged is named too: a row that a full GPU run of a step writes (``EXPECTED``) but
that step's section lacks gets ``NO ROW`` (a step cut short, a benchmark that skipped a case; a
quick CPU run writes fewer rows), and the targeted steps in none of the files are listed on one
line, so a table of two calls shows at a glance whether every target was measured. A file it
cannot read as the suite writes it (not UTF-8 text, a table without a column that a target reads,
a ``workers`` cell that is not a whole number) stops it with exit 2 and a message naming the file,
the step's table and what is wrong.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple


class ResultsError(Exception):
    """A results file that cannot be read as the suite writes it (its message names the file, the
    table and what is wrong)."""


class Row(dict):
    """A table row: column name -> cell text; it knows its file, step and table (the line of its
    header: the rows of one run), so that a column the table lacks is named
    (:class:`ResultsError`) where a target reads it, not as a ``KeyError``."""

    def __init__(self, cells: Dict[str, str], source: str = 'results', step: str = '?',
                 table: int = 0, smoke: bool = False):
        super().__init__(cells)
        self.source, self.step, self.table, self.smoke = source, step, table, smoke

    def where(self) -> str:
        return f"{self.source}: step {self.step}'s table ({' | '.join(self)})"

    def __missing__(self, column: str):
        raise ResultsError(f"{self.where()} has no column '{column}'")

    def integer(self, column: str) -> int:
        try:
            return int(self[column])
        except ValueError:
            raise ResultsError(f"{self.where()}: column '{column}' holds {self[column]!r}, not a "
                               'whole number') from None


#: step -> its rows, each a dict from column name to cell text
Rows = Dict[str, List[Row]]
#: issue, target, row, measured, verdict
Check = Tuple[str, str, str, str, str]

FALLBACK = re.compile(r'\[(torch|graph)\]|no Triton|no CUDA graph')
#: a row of the fused PAMR's sweep of launch settings: ``K`` steps a launch on ``T``-pixel tiles
SWEEP = re.compile(r'triton K=(\d+) T=(\d+)')
#: the suite's heading of a quick run (``GPU_SUITE_QUICK=1``: tiny models on a CPU)
SMOKE_RUN = re.compile(r'^# GPU suite results \(.*quick=1\)', re.M)
SMOKE = ' (smoke figures: quick=1, tiny models on a CPU)'
#: the suite's steps, whose ``### <step>`` headings start its sections (other ``###`` headings are
#: a step's own rows)
SUITE_STEPS = frozenset(re.findall(r'^(?:.* && )?step (\w+) ', (Path(__file__).parent /
                                                                'gpu_suite.sh').read_text(), re.M))
#: ``fused_propagate``'s default ``(steps_per_launch, tile)``, read from its signature (this
#: script runs without the package's imports)
PAMR_DEFAULT = re.search(r'steps_per_launch: int = (\d+), tile: int = (\d+)', (
    Path(__file__).parents[1] / 'mmdiffseg' / 'generators' / 'pamr_triton.py').read_text()).groups()
#: issue, target, step, the row a full GPU run of the step writes, and a pattern per column that
#: row's cells match (none of them naming a fallback path)
EXPECTED: Tuple[Tuple[str, str, str, str, Dict[str, str]], ...] = (
    *(('#8', 'capture <= 1.10x plain', step, f'{spec} batch {batch}',
       {'path': '^new$', 'spec': f'^{spec}$', 'batch': f'^{batch}$'})
      for step, specs in (('capture', ('diffseg', 'iseg')), ('capture_sd1', ('diffseg',)))
      for spec in specs for batch in (1, 16)),
    *(('#8', 'end to end capture <= 1.10x plain', 'end_to_end', f'{method} batch {batch}',
       {'method': f'^{method}$', 'batch': f'^{batch}$'})
      for method in ('diffseg', 'iseg') for batch in (1, 16)),
    ('#8', 'end to end capture <= 1.05x plain', 'end_to_end', 'seediff', {'method': '^seediff$'}),
    ('#9', 'DiffSeg post-processing >= 20x released', 'diffseg', 'float16 (released, default)',
     {'merge precision': r'^float16 \(released, default\)'}),
    ('#9', 'iseg post-processing >= 1x released', 'iseg', 'cluster on, float16 (released, default)',
     {'method': r'cluster on, k-means distance float16 \(released, default\)'}),
    ('#9', 'iseg post-processing >= 1x released', 'iseg', 'cluster off',
     {'method': 'cluster off'}),
    ('#9', 'seediff post-processing >= 1x released', 'seediff',
     'SeeDiff post-processing, PAMR 5000 steps [triton]',
     {'what': r'^SeeDiff post-processing, .*PAMR 5000 steps \[triton\]'}),
    ('#9', 'PAMR 5000 steps <= 0.2 s an image', 'seediff', 'PAMR, 5000 steps [triton]',
     {'what': r'^PAMR, 5000 steps .*\[triton\]'}),
    *(('#9', 'pseudo_label >= 90% of in-process', 'offline_tools', f'pseudo_label, {generator}',
       {'tool': '^pseudo_label$', 'generator / settings': rf'^{generator}.*% of in-process\)'})
      for generator in ('iSeg', 'DiffSeg')),
)


def step_rows(text: str, source: str = 'results') -> Rows:
    """Every step section's table rows, keyed by the header above them (a header is the line
    before a ``|---`` line; a section's own subheadings belong to its step). A step whose section
    is there has a key, with no rows if it wrote none. ``source`` names the text in errors."""
    rows: Rows = {}
    step, header, table = None, None, 0
    smoke = SMOKE_RUN.search(text) is not None
    lines = text.splitlines()
    for number, (line, after) in enumerate(zip(lines, lines[1:] + [''])):
        heading = line[4:].split(':')[0].strip() if line.startswith('### ') else None
        if heading in SUITE_STEPS:
            step, header = heading, None
            rows.setdefault(step, [])
        elif step is None or not line.startswith('|') or line.startswith('|---'):
            continue
        elif after.startswith('|---'):
            header, table = _cells(line), number
        elif header is not None and len(_cells(line)) == len(header):
            rows.setdefault(step, []).append(Row(dict(zip(header, _cells(line))), source, step,
                                                 table, smoke))
    return rows


def _cells(line: str) -> List[str]:
    return [cell.strip() for cell in line.strip().strip('|').split('|')]


def _number(text: str) -> Optional[float]:
    match = re.search(r'-?\d+(?:\.\d+)?(?:e[-+]?\d+)?', text)
    return float(match.group()) if match else None


def _verdict(value: Optional[float], limit: float, at_most: bool, row: Row) -> str:
    if value is None:
        return _marked('unreadable', row)
    return _marked('met' if (value <= limit if at_most else value >= limit) else 'NOT met', row)


def _marked(verdict: str, row: Row) -> str:
    """``verdict``, said to judge smoke figures where ``row`` is a quick run's."""
    return verdict + (SMOKE if row.smoke else '')


def _having(rows: Rows, step: str, *columns: str) -> Iterator[Dict[str, str]]:
    """The step's rows of the table that has ``columns`` (a step may write several tables)."""
    return (row for row in rows.get(step, []) if all(c in row for c in columns))


def checks(rows: Rows) -> Iterator[Check]:
    """Each target against each row that measures it."""
    for step in ('capture', 'capture_sd1'):
        for row in _having(rows, step, 'path', 'spec', 'ratio to plain (median)'):
            if row['path'] != 'new' or row['spec'] not in ('diffseg', 'iseg'):
                continue
            what = f"{step}: {row['spec']} batch {row['batch']}, {row['device']}"
            ratio = _number(row['ratio to plain (median)'])
            yield ('#8', 'capture <= 1.10x plain', what, f'{ratio}x',
                   _verdict(ratio, 1.10, True, row))
            memory = _number(row['extra / buffers'])
            yield ('#8', 'extra peak memory <= 2x buffers', what, f'{memory}x',
                   _verdict(memory, 2.0, True, row))
    for row in _having(rows, 'end_to_end', 'method', 'capture / plain time'):
        limit = 1.05 if row['method'] == 'seediff' else 1.10
        ratio = _number(row['capture / plain time'])
        yield ('#8', f'end to end capture <= {limit:.2f}x plain',
               f"{row['method']} batch {row['batch']}, {row['steps']} step(s), {row['device']}",
               f'{ratio}x', _verdict(ratio, limit, True, row))
    for row in _having(rows, 'diffseg', 'merge precision', 'ratio'):
        limit = 20.0 if row['merge precision'].startswith('float16') else 1.0
        ratio = _number(row['ratio'])
        verdict = 'fallback path' if FALLBACK.search(row['merge precision']) \
            else _verdict(ratio, limit, False, row)
        yield ('#9', f'DiffSeg post-processing >= {limit:g}x released',
               f"{row['merge precision']}, {row['device']}", f'{ratio}x', verdict)
    for step, column in (('iseg', 'method'), ('seediff', 'what')):
        for row in _having(rows, step, column, 'ratio'):
            ratio = _number(row['ratio'])
            sweep = SWEEP.search(row[column])
            if FALLBACK.search(row[column]):
                verdict = 'fallback path'
            elif sweep and sweep.groups() != PAMR_DEFAULT:
                verdict = 'sweep setting (not the default; compared below)'
            else:
                verdict = _verdict(ratio, 1.0, False, row)
            what = row[column] + (f", {row['device']}" if 'device' in row else '')
            yield '#9', f'{step} post-processing >= 1x released', what, f'{ratio}x', verdict
            if step == 'seediff' and row[column].startswith('PAMR, 5000 steps') \
                    and '[triton]' in row[column]:
                seconds = _number(row['ours s/img'])
                yield ('#9', 'PAMR 5000 steps <= 0.2 s an image', row[column], f'{seconds} s',
                       _verdict(seconds, 0.2, True, row))
    for row in _having(rows, 'offline_tools', 'tool', 'generator / settings'):
        share = re.search(r'\(([\d.]+)% of in-process\)', row['generator / settings'])
        if row['tool'] == 'pseudo_label' and share:
            value = float(share.group(1))
            yield ('#9', 'pseudo_label >= 90% of in-process', row['generator / settings'],
                   f'{value:g}%', _verdict(value, 90.0, False, row))
    yield from _host_side(rows)
    yield from _compiled_backends(rows)
    yield from _pamr_launch_settings(rows)


def _host_side(rows: Rows) -> Iterator[Check]:
    """#9's host side (``tool_host``'s capacity rows): on 8 cores at least 4x the GPU rate the
    stand-in plays, and the steady rate higher with the most loader workers than with none."""
    capacity = [row for row in _having(rows, 'tool_host', 'mode', 'workers', 'img/s (steady)')
                if row['mode'] == 'capacity']
    for row in capacity:
        ratio = re.search(r'\(([\d.]+)x the GPU rate\)',
                          row.get('8-core capacity (extrapolated)', ''))
        if ratio:
            value = float(ratio.group(1))
            yield ('#9', 'host side on 8 cores >= 4x the GPU rate',
                   f"tool_host: capacity, {row['workers']} workers", f'{value:g}x',
                   _verdict(value, 4.0, False, row))
    runs: Dict[Tuple[str, int], Dict[int, Optional[float]]] = {}  # one table: one run
    last: Dict[Tuple[str, int], Row] = {}
    for row in capacity:
        runs.setdefault((row.source, row.table), {})[row.integer('workers')] = \
            _number(row['img/s (steady)'])
        last[row.source, row.table] = row
    for (source, table), steady in runs.items():
        if len(steady) > 1 and None not in steady.values():
            fewest, most = min(steady), max(steady)
            where = '' if len(runs) == 1 else f' ({source}, table at line {table + 1})'
            # the target names no margin: any gain is met, and the gain is shown to be judged
            gain = f'{100 * (steady[most] / steady[fewest] - 1):+.1f}%' if steady[fewest] else '-'
            yield ('#9', 'host side scales with workers',
                   f'tool_host: capacity, steady img/s{where}',
                   ', '.join(f'{steady[w]:g} ({w} workers)' for w in sorted(steady))
                   + f'; {most} vs {fewest} workers {gain}',
                   _marked('met' if steady[most] > steady[fewest] else 'NOT met',
                           last[source, table]))


def _compiled_backends(rows: Rows) -> Iterator[Check]:
    """#8's optional compile step: which map backend captures faster in a compiled U-Net (the
    one ``'auto'`` should take there); no target, a comparison."""
    speeds: Dict[Tuple[str, str, str], Dict[str, float]] = {}
    for row in _having(rows, 'end_to_end_compile', 'method', 'map backend', 'capture img/s'):
        key = (row['method'], row['batch'], row['device'])
        speeds.setdefault(key, {})[row['map backend']] = _number(row['capture img/s']) or 0.0
    for (method, batch, device), by_backend in speeds.items():
        if len(by_backend) > 1:
            best = max(by_backend, key=by_backend.get)
            measured = ', '.join(f'{b} {v:g} img/s' for b, v in by_backend.items())
            yield ('#8', 'compiled capture: the faster map backend',
                   f'{method} batch {batch}, {device}', measured, f'{best} (comparison)')


def _pamr_launch_settings(rows: Rows) -> Iterator[Check]:
    """#9's PAMR sweep (``seediff`` on CUDA): the fastest launch setting, ``K`` steps a launch on
    ``T``-pixel tiles, against ``fused_propagate``'s default; no target, a comparison (a faster
    setting should become the default)."""
    times: Dict[Tuple[str, str, int], Dict[Tuple[str, str], float]] = {}
    for row in _having(rows, 'seediff', 'what', 'ours s/img'):
        found = re.search(r'^PAMR, (\d+) steps .*triton K=(\d+) T=(\d+)', row['what'])
        seconds = _number(row['ours s/img'])
        if found and seconds is not None:  # one table: one run on one GPU
            key = (found.group(1), row.source, row.table)
            times.setdefault(key, {})[found.group(2, 3)] = seconds
    for (steps, source, table), by_setting in times.items():
        if len(by_setting) > 1:
            best = min(by_setting, key=by_setting.get)
            measured = ', '.join(f'K={k} T={t} {s:g} s' for (k, t), s in by_setting.items())
            where = '' if len(times) == 1 else f' ({source}, table at line {table + 1})'
            yield ('#9', 'PAMR launch setting: the fastest (K, T)', f'{steps} steps{where}',
                   measured,
                   f'K={best[0]} T={best[1]} (comparison; default K={PAMR_DEFAULT[0]} '
                   f'T={PAMR_DEFAULT[1]})')


def unjudged(rows: Rows) -> Iterator[Check]:
    """Each expected row that a step's section lacks, then one line naming the targeted steps
    with no section at all."""
    for issue, target, step, what, patterns in EXPECTED:
        if step in rows and not any(
                all(re.search(p, row.get(c, '')) and not FALLBACK.search(row.get(c, ''))
                    for c, p in patterns.items()) for row in rows[step]):
            yield issue, target, f'{step}: {what}', '-', f'NO ROW ({step} ran: see its status)'
    absent = [step for step in dict.fromkeys(e[2] for e in EXPECTED) if step not in rows]
    if absent:
        yield '-', '-', f'steps in none of these files: {", ".join(absent)}', '-', 'not judged'


def table(results: List[Path]) -> str:
    rows: Rows = {}
    for path in results:
        try:
            text = path.read_text(encoding='utf-8')
        except UnicodeDecodeError as err:
            raise ResultsError(f'{path}: not UTF-8 text ({err.reason} at byte {err.start}): not a '
                               "results file that gpu_suite.sh wrote") from None
        for step, found in step_rows(text, str(path)).items():
            rows.setdefault(step, []).extend(found)
    lines = ['| issue | target | row | measured | verdict |', '|---|---|---|---|---|']
    lines += [f'| {" | ".join(check)} |' for check in (*checks(rows), *unjudged(rows))]
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('results', type=Path, nargs='+', help="gpu_suite.sh's results.md files")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.results if not p.is_file()]
    if missing:
        print(f'targets: no such file: {", ".join(missing)}', file=sys.stderr)
        return 2
    try:
        print(table(args.results), end='')
    except ResultsError as err:
        print(f'targets: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
