"""The benchmarks that append rows to a results table write its header with their first row:
a run that fails before measuring anything (``--device cuda`` where there is no driver) leaves the
file as it was, and a header that an earlier run left without rows is not stacked on."""
import sys

import numpy as np
import pytest

from sample_data import REPO

sys.path.insert(0, str(REPO / 'benchmarks'))
import bench_end_to_end  # noqa: E402

HEADER = '| a | b |\n|---|---|\n'


def test_append_row_writes_the_header_only_where_no_table_ends_the_file(tmp_path):
    """A new file: preamble, header, row; after prose: a header; after a row or after a header
    left without rows (its ``|---|`` line last): the row alone; a last line without its newline
    keeps its own line."""
    from results_table import append_row
    out = tmp_path / 'new' / 'r.md'
    append_row(out, '| 1 | 2 |', '# Title\n\nprose\n', HEADER)
    append_row(out, '| 3 | 4 |', '# Title\n', HEADER)
    assert out.read_text() == '# Title\n\nprose\n\n' + HEADER + '| 1 | 2 |\n| 3 | 4 |\n'
    for before, after in (('prose\n', 'prose\n\n' + HEADER), ('prose', 'prose\n\n' + HEADER),
                          ('x\n\n' + HEADER, 'x\n\n' + HEADER),
                          ('x\n\n' + HEADER + '\n', 'x\n\n' + HEADER + '\n'),
                          (HEADER + '| 0 | 0 |', HEADER + '| 0 | 0 |\n')):
        out.write_text(before)
        append_row(out, '| 5 | 6 |', '# unused\n', HEADER)
        assert out.read_text() == after + '| 5 | 6 |\n', before


def test_a_rerun_keeps_other_devices_rows_and_its_own_of_settings_not_measured(tmp_path):
    """bench_diffseg / bench_iseg rewrite their table from the rows a rerun keeps: every row of
    another device, and this device's rows of the settings it did not measure now, whatever the
    torch version in the device cell."""
    from results_table import kept_rows
    out = tmp_path / 'iseg.md'
    assert kept_rows(out, '| iSeg', 'cpu', '', ['| iSeg a | 1 | cpu | run |']) == []  # no file
    lines = ['# t', '| iSeg a | 9 | cuda H200 | old |', '| iSeg a | 8 | cpu | old |',
             '| iSeg a | 8 | cpu, torch 2.1 | old |', '| iSeg b | 7 | cpu, torch 2.1 | old |',
             '| other | 1 | cpu | old |']
    out.write_text('\n'.join(lines) + '\n')
    assert kept_rows(out, '| iSeg', 'cpu', '', ['| iSeg a | 1 | cpu, torch 2.2 | new |']) == [
        '| iSeg a | 9 | cuda H200 | old |', '| iSeg b | 7 | cpu, torch 2.1 | old |']


def test_a_smoke_run_replaces_no_row_of_another_workload(tmp_path):
    """A run of 1 case keeps the 4-case rows of its device and setting, and replaces its own."""
    from results_table import kept_rows
    out = tmp_path / 'diffseg.md'
    full, smoke = '| float16 | 1.0 | cpu | d (4 case(s), 3 repeat(s)) |', \
        '| float16 | 2.0 | cpu | d (1 case(s), 1 repeat(s)) |'
    out.write_text(f'{full}\n{smoke}\n')
    rerun = ['| float16 | 3.0 | cpu | e (1 case(s), 1 repeat(s)) |']
    assert kept_rows(out, '| float', 'cpu', '(1 case(s)', rerun) == [full]


def test_a_rerun_replaces_the_row_whose_graph_memory_changed(tmp_path, monkeypatch):
    """The memory CUDA graphs keep has a cell of its own: a rerun's row replaces the old one of
    its setting however much memory either measured (it was part of the setting cell)."""
    import bench_diffseg
    from results_table import kept_rows

    class Steps:
        def buffer_bytes(self):
            return 2 ** 20
    monkeypatch.setattr(bench_diffseg.torch.cuda, 'memory_snapshot', lambda: [])
    cell = bench_diffseg.graph_memory(Steps(), 'cuda')
    assert cell == '1'
    out = tmp_path / 'diffseg.md'
    out.write_text('| float32 | 1 | 5 | cuda (H200) | d (4 case(s)) |\n')
    rerun = [f'| float32 | 1 | {cell} | cuda (H200), torch 2 | e (4 case(s)) |']
    assert kept_rows(out, '| float', 'cuda (H200)', '(4 case(s)', rerun) == []


def test_end_to_end_writes_no_header_before_its_first_row(tmp_path, monkeypatch):
    """Two runs that fail building the engine leave no file (before: a header each, stacked);
    on a file that such runs left (a header last, no rows) the rows go under that header; on a
    file that ends in prose they get one header."""
    out = tmp_path / 'end_to_end.md'

    def no_driver(model, args):
        raise RuntimeError('Found no NVIDIA driver on your system')
    monkeypatch.setattr(bench_end_to_end, 'build_engine', no_driver)
    for _ in range(2):
        with pytest.raises(RuntimeError, match='no NVIDIA driver'):
            bench_end_to_end.main(['--device', 'cuda', '--methods', 'iseg', '--out', str(out)])
    assert not out.exists()

    monkeypatch.setattr(bench_end_to_end, 'build_engine', lambda model, args: object())
    monkeypatch.setattr(bench_end_to_end, 'bench_method', lambda method, engine, batch, args,
                        cuda, backend: f'| {method} | {batch} | {backend} |')
    rows = '| diffseg | 1 | auto |\n| diffseg | 2 | auto |\n| seediff | 1 | auto |\n'
    argv = ['--methods', 'diffseg', 'seediff', '--batch-size', '1', '2', '--out', str(out)]
    left = '# End-to-end\n\nprose\n\n' + bench_end_to_end.TABLE
    for before, after in ((left, left), ('# End-to-end\n\nprose\n',
                                         '# End-to-end\n\nprose\n\n' + bench_end_to_end.TABLE)):
        out.write_text(before)
        bench_end_to_end.main(argv)
        assert out.read_text() == after + rows
    out.unlink()
    bench_end_to_end.main(argv)
    text = out.read_text()
    assert text.startswith('# End-to-end images per second\n\nPer method, on random-weights')
    assert text.endswith('\n\n' + bench_end_to_end.TABLE + rows)
    assert text.count('| date (UTC) |') == 1


def test_figures_a_target_reads_are_rounded_towards_missing_it():
    """A speed-up or share is rounded down and a cost up, so that rounding cannot meet a target
    the measurement missed (19.96x was printed 20.0x and met '>= 20x', 89.5% was 90%); figures
    at a limit stay there (0.29 is not pushed down by its float error)."""
    from results_table import directed, significant
    assert [directed(19.96, 1, up=False), directed(20.0, 1, up=False),
            directed(100 * 0.895, 1, up=False), directed(0.999, 2, up=False),
            directed(0.29, 2, up=False), directed(np.float64(36.37), 1, up=False)] == [
                '19.9', '20.0', '89.5', '0.99', '0.29', '36.3']
    assert [directed(1.1001, 3, up=True), directed(1.1, 3, up=True),
            directed(2.001, 2, up=True)] == ['1.101', '1.100', '2.01']
    assert [significant(0.20001, 4, up=True), significant(4.2541e-06, 4, up=True),
            significant(1239.2, 4, up=True)] == ['0.2001', '0.000004255', '1240']


def test_seediff_rows_round_the_pamr_time_up_and_the_ratio_down():
    """The PAMR target (<= 0.2 s) and the ratio target (>= 1x) read these cells."""
    import bench_seediff
    row = bench_seediff.table_row('PAMR, 5000 steps', 0.20001, 0.19999, '')
    assert row == '| PAMR, 5000 steps | 0.2001 | 0.2 | 0.9x |  |'


def test_seediff_times_each_side_after_the_same_warm_up_on_cuda(monkeypatch):
    """One untimed call before the timed ones on CUDA, for whichever side ``timed`` times (the
    released side was timed cold while ours had a warm-up); none on a CPU."""
    import bench_seediff
    import torch
    monkeypatch.setattr(bench_seediff.torch.cuda, 'synchronize', lambda: None)
    for device, calls in (('cuda', 3), ('cpu', 2)):
        made = []
        bench_seediff.timed(lambda: made.append(1), 2, torch.device(device))
        assert len(made) == calls, device


def test_end_to_end_alternates_its_timed_calls_after_a_warm_up_of_each():
    """plain, capture and method were timed each as a block (a load change hit one of them):
    now one warm-up each, then rounds of all in turn, the median of each."""
    order = []
    measured = bench_end_to_end.timed({name: (lambda name=name: order.append(name) or name)
                                       for name in ('plain', 'capture', 'method')}, 2, cuda=False)
    assert order == ['plain', 'capture', 'method'] * 3
    assert {name: result for name, (_, result) in measured.items()} == {
        'plain': 'plain', 'capture': 'capture', 'method': 'method'}


def test_online_training_times_cuda_steps_in_wall_seconds_after_synchronisation(monkeypatch):
    """Process CPU time misses the GPU's work: on CUDA a step is wall time after a sync."""
    import bench_online_training as bench
    synced, clocks = [], iter([1.0, 3.5])
    monkeypatch.setattr(bench, 'DEVICE', 'cuda')
    monkeypatch.setattr(bench.torch.cuda, 'synchronize', lambda: synced.append(1))
    monkeypatch.setattr(bench.time, 'perf_counter', lambda: next(clocks))
    hook = bench.StepTime()
    hook.before_train_iter(None, 0)
    hook.after_train_iter(None, 0)
    assert hook.steps == [2.5] and len(synced) == 2
