"""What the tools' shared command-line layer does: the exit status and the one stderr line of
each known failure, the launcher checks, the pre-flight switches and the model a preset names."""
import datetime
import sys
from argparse import Namespace

import pytest
import torch

from mmdiffseg.apis import cli
from mmdiffseg.apis.io import JobSummary, UserInputError

RANK_VARS = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def raising(error):
    def main(argv):
        raise error
    return main


def test_a_gpu_out_of_memory_names_its_first_line_and_the_batch_size_fix(capsys):
    error = torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB\n'
                                        'Of the allocated memory 70 GiB is allocated by PyTorch')
    assert cli.run_cli(raising(error)) == cli.EXIT_WRITE_FAILED == 3
    out, err = capsys.readouterr()
    assert out == ''
    assert err == ('error: the GPU ran out of memory (CUDA out of memory. Tried to allocate '
                   '2.00 GiB); rerun with a smaller --batch-size (finished items are kept)\n')


def test_ctrl_c_before_any_item_exits_130_with_one_line_on_stderr(capsys):
    assert cli.run_cli(raising(KeyboardInterrupt())) == cli.EXIT_INTERRUPTED == 130
    out, err = capsys.readouterr()
    assert out == ''
    # (a resume stopped while it starts up has items of earlier runs: they are kept)
    assert err == ('error: interrupted before this run made any item; rerun the same command to '
                   'start (or resume: what earlier runs made is kept)\n')


def test_a_tool_that_returns_nothing_exits_0_and_bad_input_goes_to_stderr(capsys):
    assert cli.run_cli(lambda argv: None) == 0
    assert cli.run_cli(raising(UserInputError('--size 7 is not a multiple of 64'))) == 2
    assert capsys.readouterr() == ('', 'error: --size 7 is not a multiple of 64\n')


def test_strict_names_the_failed_count_and_the_option(capsys):
    summary = JobSummary(made=1, failed=[('a', 'truncated'), ('b', 'unreadable')])
    assert cli.exit_status(summary, strict=True) == cli.EXIT_ITEMS_FAILED
    assert capsys.readouterr().err == 'error: 2 item(s) failed (--strict)\n'


@pytest.mark.parametrize('fails', [False, True])
def test_only_a_rank_that_succeeded_waits_at_the_barrier(tmp_path, fails, monkeypatch):
    """A failed rank leaves at once: waiting for ranks that will not come would hang it."""
    import torch.distributed as dist
    barriers = []
    monkeypatch.setattr(dist, 'barrier', lambda *a, **k: barriers.append(1))

    def tool(argv):
        dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                                world_size=1)
        if fails:
            raise UserInputError('bad input')

    cli.run_cli(tool)
    assert not dist.is_initialized() and barriers == ([] if fails else [1])


def test_a_launcher_names_each_variable_it_lacks_and_none_needs_nothing(monkeypatch):
    for name in RANK_VARS:
        monkeypatch.setenv(name, '0')
    cli.check_launcher('pytorch', 'segment')
    monkeypatch.delenv('MASTER_PORT')
    with pytest.raises(UserInputError) as error:
        cli.check_launcher('pytorch', 'segment')
    assert str(error.value) == (
        '--launcher pytorch but MASTER_PORT not set: start it with torchrun: torchrun '
        '--nproc-per-node N tools/segment.py ... --launcher pytorch; or drop --launcher for one '
        'process')
    for name in RANK_VARS:
        monkeypatch.delenv(name, raising=False)
    cli.check_launcher('none', 'segment')


@pytest.mark.parametrize('launcher,device,joined', [
    ('pytorch', 'cpu', 'gloo'), ('pytorch', 'cuda:0', 'init_dist pytorch'),
    ('slurm', 'cuda', 'init_dist slurm'), ('none', 'cuda', None)])
def test_cpu_ranks_under_torchrun_join_with_gloo_and_gpus_with_mmengine(
        launcher, device, joined, monkeypatch):
    """A day's timeout: a rank that finished its share waits for the others in the job's last
    collective (with torch's 30 min, a resume whose shares differ by hours of work failed)."""
    import torch.distributed as dist
    calls = []
    monkeypatch.setattr(dist, 'init_process_group',
                        lambda backend, timeout: calls.append((backend, timeout)))
    monkeypatch.setattr(cli, 'init_dist',
                        lambda name, timeout: calls.append((f'init_dist {name}', timeout)))
    cli.start_launcher(launcher, device)
    day = 24 * 3600 if joined and joined.startswith('init_dist') else datetime.timedelta(hours=24)
    assert calls == ([(joined, day)] if joined else [])


@pytest.mark.parametrize('launcher', ['slurm', 'mpi'])
def test_cpu_ranks_under_slurm_or_mpi_are_refused_naming_torchrun(launcher):
    """mmengine's slurm and mpi set-ups give each rank a GPU: with --device cpu they ended in
    'Found no NVIDIA driver' (a traceback, exit 1)."""
    with pytest.raises(UserInputError, match=rf'^--launcher {launcher} joins the ranks through '
                                             r'mmengine, which gives each rank a GPU, but '
                                             r'--device is cpu: .*torchrun and --launcher pytorch'):
        cli.start_launcher(launcher, 'cpu')


def test_gpu_ranks_join_through_mmengines_own_init_dist(monkeypatch):
    """mmengine's init_dist takes the timeout in seconds: a timedelta was a TypeError before any
    work on GPUs under torchrun (every multi-GPU tool run, dist_prefill.sh) and under slurm.
    Here its real code runs down to torch's init_process_group."""
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    calls = []
    monkeypatch.setattr(dist, 'init_process_group', lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(torch.cuda, 'set_device', lambda index: calls.append(index))
    monkeypatch.setattr(mp, 'get_start_method', lambda allow_none=False: 'fork')
    for name, value in (('RANK', '0'), ('LOCAL_RANK', '0'), ('WORLD_SIZE', '1')):
        monkeypatch.setenv(name, value)
    cli.start_launcher('pytorch', 'cuda:0')
    assert calls == [0, dict(backend='nccl', timeout=datetime.timedelta(hours=24))]


@pytest.mark.parametrize('launcher,wrapper,started', [
    ('pytorch', None, True), ('pytorch', dict(type='Mine'), True), ('slurm', None, False),
    ('none', None, False)])
def test_a_runner_joins_with_gloo_only_under_torchrun_without_cuda(
        launcher, wrapper, started, monkeypatch):
    from mmengine.config import Config
    calls = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(cli, 'start_launcher', lambda *args: calls.append(args))
    for name in cli.LAUNCHER_ENV.get(launcher, ((), ''))[0]:  # started by torchrun / srun
        monkeypatch.setenv(name, '0')
    cfg = Config(dict(launcher=launcher, model_wrapper_cfg=wrapper,
                      env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'))))
    cli.start_runner_launcher(cfg, 'train')
    assert calls == ([('pytorch', 'cpu')] if started else [])
    expected = wrapper or (dict(type='MMDistributedDataParallel', device_ids=None)
                           if started else None)
    assert cfg.model_wrapper_cfg == expected
    # the runtime environment logged names the backend the ranks joined with
    nccl = dict(backend='nccl', **({} if launcher == 'none' else dict(timeout=3 * 3600)))
    assert cfg.env_cfg == dict(cudnn_benchmark=False,
                               dist_cfg=dict(backend='gloo') if started else nccl)


@pytest.mark.parametrize('given', [None, 600])
def test_gpu_training_ranks_wait_longer_than_the_nccl_default(given, monkeypatch):
    """NCCL's default timeout is 10 minutes: one rank's first compile, or its wait for a label
    another rank makes (the cache's wait_timeout, 600 s), stopped every rank with a collective's
    timeout that named neither. The Runner's dist_cfg gets 3 h unless the config sets one."""
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    for name in cli.LAUNCHER_ENV['pytorch'][0]:
        monkeypatch.setenv(name, '0')
    dist_cfg = dict(backend='nccl', **({} if given is None else dict(timeout=given)))
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dist_cfg)))
    cli.start_runner_launcher(cfg, 'train')
    assert cfg.env_cfg.dist_cfg == dict(backend='nccl', timeout=given or 3 * 3600)


def test_loading_bars_are_shown_by_rank_0_only_on_a_terminal(monkeypatch):
    """Every rank loads the model: diffusers' and transformers' bars stay on rank 0 only, and
    off where stderr is a log file (their carriage-return redraws and cursor codes)."""
    import mmengine.dist
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

    from mmdiffseg.attention.loading import loading_bars_where_read
    for rank, terminal, shown in ((0, True, True), (1, True, False), (0, False, False)):
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()
        monkeypatch.setattr(mmengine.dist, 'get_rank', lambda: rank)
        monkeypatch.setattr(sys.stderr, 'isatty', lambda: terminal)
        with loading_bars_where_read():
            assert diffusers_logging.is_progress_bar_enabled() is shown
            assert transformers_logging.is_progress_bar_enabled() is shown
            assert are_progress_bars_disabled() is not shown
        # after the load, as before it: they stayed off for the process (a notebook's later
        # downloads had no bars)
        assert diffusers_logging.is_progress_bar_enabled()
        assert transformers_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    disable_progress_bars()  # the user's own choice is kept too
    with loading_bars_where_read():
        pass
    assert are_progress_bars_disabled() and transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()
    disable_progress_bars('huggingface_hub.http')   # and one group's
    with loading_bars_where_read():
        pass
    assert are_progress_bars_disabled('huggingface_hub.http') and not are_progress_bars_disabled()
    transformers_logging.enable_progress_bar()


def test_a_jupyter_kernels_output_shows_loading_bars():
    """A notebook's stderr is no tty, but it renders the bars (of a multi-GB download)."""
    from mmdiffseg.attention.loading import _shows_bars
    kernel_stream = type('OutStream', (), {'__module__': 'ipykernel.iostream',
                                           'isatty': lambda self: False})()
    log_file = type('TextIOWrapper', (), {'__module__': 'io', 'isatty': lambda self: False})()
    assert _shows_bars(kernel_stream) and not _shows_bars(log_file)


def test_preflight_runs_unless_skipped_and_preflight_only_ends_the_tool(monkeypatch, capsys):
    from mmdiffseg import preflight
    checked = []
    monkeypatch.setattr(preflight, 'ensure_ready', lambda *args: checked.append(args))
    args = Namespace(skip_preflight=True, preflight_only=False)
    assert cli.run_preflight(args, 'cfg', 'a.py', 'train') is False and checked == []
    args.skip_preflight = False
    assert cli.run_preflight(args, 'cfg', 'a.py', 'train') is False
    assert checked == [('cfg', 'a.py', 'train')] and capsys.readouterr().out == ''
    args.preflight_only = True
    assert cli.run_preflight(args, 'cfg', 'a.py', 'test') is True
    assert capsys.readouterr().out == ('Pre-flight check: a.py can test here (nothing was '
                                       'started).\n')


def test_a_presets_model_comes_before_the_generators_released_model(tmp_path):
    preset = tmp_path / 'preset.py'
    preset.write_text("generator = dict(type='DiffSeg')\nmodel_id = 'me/my-sd'\n")
    run = dict(method=None, config=str(preset), cfg_options=None)
    assert cli.generator_and_model(Namespace(model=None, **run), 'iseg', 'x') == (
        dict(type='DiffSeg'), 'me/my-sd')
    assert cli.generator_and_model(Namespace(model='other/sd', **run), 'iseg', 'x')[1] == \
        'other/sd'


def test_a_misspelt_class_set_lists_every_near_name():
    with pytest.raises(UserInputError, match=r"did you mean 'cityscapes' or 'cityscapes27'\? "):
        cli.resolve_class_arg('cityscape')


def test_cfg_options_split_at_the_first_equals():
    """(A pair without one: tests/tools/test_offline_args.py, refused by the tools' parser.)"""
    from mmdiffseg.apis.builders import parse_options
    assert parse_options(['prompt=a {} = b', 'n=[1, 2]']) == {'prompt': 'a {} = b', 'n': [1, 2]}


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_runner_tool_not_started_by_its_launcher_stops_with_how_to_start_it(
        tool, monkeypatch, capsys):
    """tools/train.py / test.py --launcher pytorch outside torchrun: exit 2 naming torchrun, as
    the offline tools do (was mmengine's rendezvous traceback, exit 1)."""
    from mmengine.config import Config
    for name in cli.LAUNCHER_ENV['pytorch'][0]:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as stop:
        cli.start_runner_launcher(Config(dict(launcher='pytorch')), tool)
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(
        'error: --launcher pytorch but RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not '
        f'set: start it with torchrun: torchrun --nproc-per-node N tools/{tool}.py')


def test_one_of_several_launched_ranks_without_a_launcher_is_told_to_add_it(monkeypatch):
    """torchrun (or mpirun) without --launcher: each rank would run the whole job, its siblings
    refused by the folder lock as "another run"; each is told the option instead."""
    for name in RANK_VARS + ('OMPI_COMM_WORLD_SIZE',):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('WORLD_SIZE', '1')
    cli.check_launcher('none', 'segment')
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(UserInputError, match=r'^WORLD_SIZE=2: this process is one of 2 ranks a '
                                             r'launcher started, but --launcher is none: add '
                                             r'--launcher pytorch'):
        cli.check_launcher('none', 'segment')
    monkeypatch.delenv('WORLD_SIZE')
    monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '4')
    with pytest.raises(UserInputError, match='add --launcher mpi'):
        cli.check_launcher('none', 'pseudo_label')


def test_each_ranks_error_line_names_its_rank(monkeypatch, capsys):
    """Under torchrun every rank prints its own stop line, the same words but for its counts
    ('error: interrupted: made 0, ...' twice): each names its rank; one process's does not."""
    import torch.distributed as dist
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'get_rank', lambda: 1)
    monkeypatch.setattr(cli, 'leave_process_group', lambda barrier: None)

    def refused(argv):
        raise UserInputError('no such folder')
    for world_size, line in ((2, 'error: rank 1: no such folder\n'),
                             (1, 'error: no such folder\n')):
        monkeypatch.setattr(dist, 'get_world_size', lambda: world_size)
        assert cli.run_cli(refused) == cli.EXIT_BAD_INPUT
        assert capsys.readouterr().err == line
