"""``benchmarks/targets.py`` judges issue 9's host-side target on ``bench_tool_host.py``'s own
table: the 8-core capacity at least 4x the GPU rate, and capacity growing with loader workers."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))
import bench_tool_host  # noqa: E402
import targets  # noqa: E402


def host_table(tmp_path, rows, gpu_rate=70.0):
    """``bench_tool_host.write_table``'s output for ``rows`` under the suite's step heading."""
    args = type('Args', (), dict(fsync_ms=0, images=160, batch_size=16, gpu_rate=gpu_rate,
                                 repeats=1, out=tmp_path / 'tool_host.md'))
    bench_tool_host.write_table(args, rows, 'test machine', 1.0, 0.5)
    return '### tool_host\n' + args.out.read_text()


def judged(tmp_path, text):
    (tmp_path / 'results.md').write_text(text)
    lines = targets.table([tmp_path / 'results.md']).splitlines()[2:]
    return [tuple(c.strip() for c in line.strip('|').split('|')) for line in lines
            if 'host side' in line]


def test_host_capacity_is_judged_against_four_times_the_gpu_rate(tmp_path):
    """8-core capacity = min(8 / CPU s, 1 / main CPU s): 280 img/s is exactly 4x of 70 (met),
    279 just under; rows with no workers and the stand-in's rows are not judged; capacity growing
    from 0 to the most workers is met."""
    rows = [('capacity', 0, 150.0, 147.0, None, 0.010, 0.0),
            ('capacity', 2, 150.0, 159.0, None, 0.001, 8 / 280 - 0.001),
            ('capacity', 8, 150.0, 169.0, None, 1 / 279, 0.0),
            ('GPU stand-in, waiting only', 2, 40.0, 42.0, 0.94, 0.001, 0.010)]
    assert judged(tmp_path, host_table(tmp_path, rows)) == [
        ('#9', 'host side on 8 cores >= 4x the GPU rate', 'tool_host: capacity, 2 workers',
         '4x', 'met'),
        ('#9', 'host side on 8 cores >= 4x the GPU rate', 'tool_host: capacity, 8 workers',
         '3.98x', 'NOT met'),
        ('#9', 'host side scales with workers', 'tool_host: capacity, steady img/s',
         '147 (0 workers), 159 (2 workers), 169 (8 workers); 8 vs 0 workers +15.0%', 'met')]


def test_capacity_that_falls_with_workers_and_a_slower_gpu_rate(tmp_path):
    """The ratio is to the table's own ``--gpu-rate`` (400 img/s on 8 cores is 8.88x of 45,
    rounded down); the most workers slower than none is not met, even if a middle count is
    faster."""
    rows = [('capacity', 0, 200.0, 200.0, None, 0.005, 0.0),
            ('capacity', 1, 210.0, 210.0, None, 0.001, 0.019),
            ('capacity', 4, 150.0, 150.0, None, 0.0025, 0.0175)]
    got = judged(tmp_path, host_table(tmp_path, rows, gpu_rate=45.0))
    assert got == [
        ('#9', 'host side on 8 cores >= 4x the GPU rate', 'tool_host: capacity, 1 workers',
         '8.88x', 'met'),
        ('#9', 'host side on 8 cores >= 4x the GPU rate', 'tool_host: capacity, 4 workers',
         '8.88x', 'met'),
        ('#9', 'host side scales with workers', 'tool_host: capacity, steady img/s',
         '200 (0 workers), 210 (1 workers), 150 (4 workers); 4 vs 0 workers -25.0%', 'NOT met')]


def test_each_run_is_judged_on_its_own_rows(tmp_path):
    """Two runs that each fall with workers (100 -> 90 img/s with 8 workers, 10 -> 9 with 2) were
    judged together as 10 (0), 9 (2), 90 (8): met. Each table is one run, judged alone."""
    (tmp_path / 'one').mkdir(), (tmp_path / 'two').mkdir()  # write_table appends to its file
    first = host_table(tmp_path / 'one', [('capacity', 0, 100.0, 100.0, None, 0.005, 0.0),
                                          ('capacity', 8, 90.0, 90.0, None, 0.001, 0.019)])
    second = host_table(tmp_path / 'two', [('capacity', 0, 10.0, 10.0, None, 0.005, 0.0),
                                           ('capacity', 2, 9.0, 9.0, None, 0.001, 0.019)])
    (tmp_path / 'a.md').write_text(first)
    (tmp_path / 'b.md').write_text(second)
    lines = targets.table([tmp_path / 'a.md', tmp_path / 'b.md']).splitlines()
    scaling = [line for line in lines if 'scales with workers' in line]
    assert len(scaling) == 2 and all(line.rstrip(' |').endswith('NOT met') for line in scaling)
    assert '100 (0 workers), 90 (8 workers)' in scaling[0] and 'a.md' in scaling[0]
    assert '10 (0 workers), 9 (2 workers)' in scaling[1] and 'b.md' in scaling[1]
