"""Every target of ``benchmarks/targets.py`` finds its row in a full GPU suite run (one results
file or the two calls' files), and a row that a step did not write is named as missing."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
import targets  # noqa: E402


def unjudged(tmp_path, *texts):
    """The rows of the table made from ``texts`` that judge nothing: (row, verdict)."""
    for i, text in enumerate(texts):
        (tmp_path / f'u{i}.md').write_text(text)
    lines = targets.table([tmp_path / f'u{i}.md' for i in range(len(texts))]).splitlines()[2:]
    got = [[c.strip() for c in line.strip('|').split('|')] for line in lines]
    return [(row, verdict) for _, _, row, _, verdict in got
            if verdict.startswith(('NO ROW', 'not judged'))]


NEW_CAPTURES = ''.join(f'| {s} | {b} | new | gpu | 1.0 | 1.0 |\n'
                       for s in ('diffseg', 'iseg') for b in (1, 16))
EXTRACTS = ''.join(f'| {m} | {b} | 1 | gpu | 1.0 |\n' for m in ('diffseg', 'iseg') for b in (1, 16))
FULL_RUN = """### capture
| spec | batch | path | device | ratio to plain (median) | extra / buffers |
|---|---|---|---|---|---|
""" + NEW_CAPTURES + """
### capture_sd1
| spec | batch | path | device | ratio to plain (median) | extra / buffers |
|---|---|---|---|---|---|
| diffseg | 1 | new | sd1 | 1.0 | 1.0 |
| diffseg | 16 | new | sd1 | 1.0 | 1.0 |

### end_to_end
| method | batch | steps | device | capture / plain time |
|---|---|---|---|---|
""" + EXTRACTS + """\
| seediff | 8 | 50 | gpu | 1.0 |

### diffseg
| merge precision | ratio | device |
|---|---|---|
| float16 (released, default), CUDA graphs keep 3 MiB | 30.0x | gpu |

### iseg
| method | ratio | device |
|---|---|---|
| iSeg wsss_voc, cluster on, k-means distance float16 (released, default) | 3.0x | gpu |
| iSeg wsss_voc, cluster off, CUDA graphs keep 1 MiB | 1.5x | gpu |

### seediff
| what | ours s/img | ratio |
|---|---|---|
| SeeDiff post-processing, 512x512, PAMR 5000 steps [triton] | 0.03 | 50.0x |
| PAMR, 5000 steps at 512x512 (1 mask) [triton] | 0.02 | 15.0x |

### offline_tools
| tool | generator / settings |
|---|---|
| pseudo_label | iSeg WSSS VOC (95% of in-process) |
| pseudo_label | DiffSeg unlabelled (defaults) (91% of in-process) |
"""


def test_every_target_of_a_full_run_has_its_row_and_a_lost_row_is_named(tmp_path):
    """A full run's rows leave nothing unjudged, split over two calls too; a row removed, or
    replaced by its fallback path's row, or a step cut short before writing a row, is named as
    ``NO ROW`` under its target; a step in no file is listed once."""
    assert unjudged(tmp_path, FULL_RUN) == []
    call_1, call_2 = FULL_RUN.split('### end_to_end')
    assert unjudged(tmp_path, call_1, '### end_to_end' + call_2) == []
    assert unjudged(tmp_path, call_1) == [
        ('steps in none of these files: end_to_end, diffseg, iseg, seediff, offline_tools',
         'not judged')]
    lost = (FULL_RUN.replace('| iseg | 16 | new |', '| iseg | 16 | old |')
            .replace('cluster off, CUDA graphs keep 1 MiB',
                     'cluster off, eager steps (no CUDA graph)')
            .replace('PAMR, 5000 steps at 512x512 (1 mask) [triton]', 'PAMR, 5000 steps [torch]')
            .replace('| seediff | 8 |', '| diffseg | 8 |')
            .replace('(defaults) (91% of in-process)', '(defaults)'))
    lost = lost.split('### diffseg')[0] + '### diffseg: timeout; the last 40 lines of its log\n' \
        + '### iseg' + lost.split('### iseg')[1]
    assert unjudged(tmp_path, lost) == [
        ('capture: iseg batch 16', 'NO ROW (capture ran: see its status)'),
        ('end_to_end: seediff', 'NO ROW (end_to_end ran: see its status)'),
        ('diffseg: float16 (released, default)', 'NO ROW (diffseg ran: see its status)'),
        ('iseg: cluster off', 'NO ROW (iseg ran: see its status)'),
        ('seediff: PAMR, 5000 steps [triton]', 'NO ROW (seediff ran: see its status)'),
        ('offline_tools: pseudo_label, DiffSeg', 'NO ROW (offline_tools ran: see its status)')]
