"""tools/train.py and tools/test.py options: --amp, work dirs, --resume (also in a moved work
dir), --cfg-options, --tta, --show-dir and --out."""
import logging
import os.path as osp

import pytest
from e2e_helpers import REPO, TINY_ONLINE_CONFIG, load_tool
from mmengine.config import Config


def test_train_options():
    train = load_tool('train')
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    train.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    with pytest.raises(ValueError, match='--amp needs optim_wrapper.type OptimWrapper'):
        train.enable_amp(Config(dict(optim_wrapper=dict(type='ColossalAIOptimWrapper'))))
    assert train.work_dir_for(Config({}), 'configs/x/abc.py') == osp.join('./work_dirs', 'abc')
    assert train.work_dir_for(Config(dict(work_dir='w')), 'abc.py') == 'w'
    assert train.work_dir_for(Config(dict(work_dir='w')), 'abc.py', 'cli') == 'cli'
    args = train.parse_args([str(TINY_ONLINE_CONFIG), '--cfg-options', 'a.b=1', 'c=[1,2]',
                             '--launcher', 'pytorch'])
    assert args.cfg_options == {'a.b': 1, 'c': [1, 2]} and args.launcher == 'pytorch'


def test_resume_reads_a_moved_work_dir_and_test_makes_its_out_folder(tmp_path, monkeypatch):
    """--resume in a moved or copied work dir loaded the path last_checkpoint recorded (the old
    folder: gone, or another run's); tools/test.py --out makes its folder on every rank (mmseg's
    IoUMetric made it on rank 0 only, so rank 1's first write failed)."""
    train = load_tool('train')
    moved = tmp_path / 'moved'
    moved.mkdir()
    (moved / 'iter_4.pth').write_bytes(b'w')
    (moved / 'last_checkpoint').write_text(str(tmp_path / 'old' / 'iter_4.pth'))
    cfg = Config(dict(work_dir=str(moved)))
    assert train.resume_from_work_dir(cfg) is None
    assert cfg.resume and cfg.load_from == str(moved / 'iter_4.pth')
    test = load_tool('test')
    monkeypatch.setattr(test, 'build_runner', lambda cfg: type('Runner', (), dict(
        test=lambda self: None))())
    out = tmp_path / 'preds' / 'voc'
    test.main([str(TINY_ONLINE_CONFIG), str(moved / 'iter_4.pth'), '--out', str(out),
               '--skip-preflight'])
    assert out.is_dir()


def test_resume_takes_the_work_dirs_newest_checkpoint_when_the_named_one_is_gone(
        tmp_path, monkeypatch):
    """last_checkpoint names a deleted file: --resume continues from the work dir's highest
    numbered checkpoint (iter_10 after iter_3), not the same name in the folder the work dir was
    copied from; with no checkpoint of its own, from the named one where it is, and the run's log
    says so. resume=True set in the config or by --cfg-options is not dropped."""
    train = load_tool('train')
    original, copy = tmp_path / 'original', tmp_path / 'copy'
    for folder, names in ((original, ['iter_12.pth']), (copy, ['iter_3.pth', 'iter_10.pth'])):
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b'w')
        (folder / 'last_checkpoint').write_text(str(original / 'iter_12.pth'))
    cfg = Config(dict(work_dir=str(copy)))
    assert train.resume_from_work_dir(cfg) is None
    assert cfg.resume and cfg.load_from == str(copy / 'iter_10.pth')
    for name in ('iter_3.pth', 'iter_10.pth'):
        (copy / name).unlink()
    cfg = Config(dict(work_dir=str(copy)))
    assert train.resume_from_work_dir(cfg) == (
        f'--resume: {copy} holds no checkpoint; its last_checkpoint names '
        f"{original / 'iter_12.pth'}, which the run resumes from")
    assert cfg.load_from == str(original / 'iter_12.pth')
    seen = []
    monkeypatch.setattr(train, 'run_preflight', lambda args, cfg, *_: seen.append(cfg) or True)
    train.main([str(TINY_ONLINE_CONFIG), '--cfg-options', 'resume=True',
                f"load_from={original / 'iter_12.pth'}"])
    train.main([str(TINY_ONLINE_CONFIG)])
    assert seen[0].resume is True and seen[0].load_from == str(original / 'iter_12.pth')
    assert seen[1].resume is False


def test_an_out_that_is_a_file_is_refused_before_the_run(tmp_path, capsys):
    """--out naming an existing file: one error line and exit 2 (a FileExistsError traceback
    before), the file untouched."""
    (tmp_path / 'iter_1.pth').write_bytes(b'w')
    (tmp_path / 'afile').write_text('kept')
    with pytest.raises(SystemExit) as stopped:
        load_tool('test').main([str(TINY_ONLINE_CONFIG), str(tmp_path / 'iter_1.pth'),
                                '--out', str(tmp_path / 'afile')])
    assert stopped.value.code == 2 and (tmp_path / 'afile').read_text() == 'kept'
    assert capsys.readouterr().err == (
        f"tools/test.py: error: --out {tmp_path / 'afile'} is a file; --out takes the folder the "
        'predictions are saved in\n')


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_generator_config_is_refused_naming_the_tools_that_take_it(tool, capsys):
    """configs/diffseg/*.py hold a generator for the offline tools, no model: test.py stopped on
    an AttributeError, and train.py's pre-flight said it could train."""
    config = str(REPO / 'configs/diffseg/diffseg_sd14_coco-stuff-27.py')
    with pytest.raises(SystemExit) as stopped:
        load_tool(tool).main([config, '--preflight-only'])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(
        f'tools/{tool}.py: error: {config} is a generator config, for the offline tools '
        '(tools/pseudo_label.py, segment.py and synthesize.py --config): it has no `model`')


def test_test_options(capsys):
    test = load_tool('test')
    cfg = Config(dict(
        model=dict(type='EncoderDecoder'), tta_model=dict(type='SegTTAModel'),
        tta_pipeline=[dict(type='TestTimeAug')], test_dataloader=dict(dataset=dict(pipeline=[])),
        default_hooks=dict(visualization=dict(type='SegVisualizationHook')),
        visualizer=dict(type='SegLocalVisualizer')))
    test.enable_tta(cfg)
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.type == 'EncoderDecoder'
    assert cfg.test_dataloader.dataset.pipeline == [dict(type='TestTimeAug')]
    test.enable_visualization(cfg, show=False, show_dir='drawn', wait_time=2)
    assert cfg.default_hooks.visualization.draw and cfg.visualizer.save_dir == 'drawn'
    assert 'one test batch in 50 (batches 50, 100, ...' in capsys.readouterr().out  # mmseg's
    test.enable_visualization(cfg, show=True, show_dir=None, wait_time=2, interval=1)
    assert cfg.default_hooks.visualization.interval == 1 and capsys.readouterr().out == ''
    # DiffusionSegmentor: drawn on the model's input, every image, also without --show-dir
    # (default_hooks.visualization.draw=True stopped mmseg's hook on the size mismatch)
    cfg = Config(dict(model=dict(type='DiffusionSegmentor'), visualizer=dict(),
                      default_hooks=dict(visualization=dict(type='SegVisualizationHook'))))
    test.draw_on_model_input(cfg)
    test.enable_visualization(cfg, show=False, show_dir='drawn', wait_time=2)
    assert cfg.default_hooks.visualization == dict(type='ModelInputVisualizationHook', draw=True)
    cfg.default_hooks.visualization = dict(type='SegVisualizationHook', draw=True, interval=3)
    test.draw_on_model_input(cfg)   # the user's settings carry over
    assert cfg.default_hooks.visualization == dict(type='ModelInputVisualizationHook', draw=True,
                                                   interval=3)
    for config in ('diffseg-sd14_cityscapes27-unsupervised-512x512.py',
                   'diffseg-sd14_cocostuff27-unsupervised-512x512.py',
                   'iseg-sd21base_voc12-train-pseudo-masks.py'):   # (mmseg's API reads them too)
        shipped = Config.fromfile(REPO / 'configs/mask2former' / config)
        assert shipped.default_hooks.visualization == dict(type='ModelInputVisualizationHook')
    with pytest.raises(ValueError, match='--tta needs tta_pipeline and tta_model in the config, '
                                         'which lacks tta_pipeline and tta_model'):
        test.enable_tta(Config(dict(model=dict(type='EncoderDecoder'))))
    assert test.parse_args([str(TINY_ONLINE_CONFIG)]).checkpoint is None


def test_amp_and_tta_reach_the_config_the_run_is_built_from(tmp_path, monkeypatch):
    """``train.py --amp`` and ``test.py --tta`` change the config handed to the run (seen at the
    pre-flight step, which then stops the tool); a config already on AMP is left as it is, with a
    warning (a config without the hook or the TTA entries: test_drawing_or_tta_with_a_config_
    lacking_their_entries_is_one_line)."""
    train, test = load_tool('train'), load_tool('test')
    seen = []
    for tool in (train, test):
        monkeypatch.setattr(tool, 'run_preflight', lambda args, cfg, *_: seen.append(cfg) or True)
    train.main([str(TINY_ONLINE_CONFIG), '--amp'])
    train.main([str(TINY_ONLINE_CONFIG)])
    amp, plain = seen[-2:]
    assert amp.optim_wrapper.type == 'AmpOptimWrapper' and amp.optim_wrapper.loss_scale == 'dynamic'
    assert plain.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in plain.optim_wrapper
    warned = []
    monkeypatch.setattr(train, 'print_log', lambda msg, **kw: warned.append((msg, kw['level'])))
    on_amp = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper', loss_scale=512.0)))
    train.enable_amp(on_amp)
    assert on_amp.optim_wrapper == dict(type='AmpOptimWrapper', loss_scale=512.0)
    assert warned == [('AMP is already enabled in the config', logging.WARNING)]
    monkeypatch.setattr(test, 'enable_tta', lambda cfg: cfg.merge_from_dict(dict(tta_seen=True)))
    (tmp_path / 'iter_1.pth').write_bytes(b'w')
    for extra in (['--tta'], []):
        test.main([str(TINY_ONLINE_CONFIG), str(tmp_path / 'iter_1.pth'), *extra])
    assert seen[-2].get('tta_seen') and not seen[-1].get('tta_seen')


def test_tta_of_a_training_free_config_stops_before_any_model(capsys):
    """--tta swaps in the ADE20K TTA pipeline (no image-level labels) and merges logits the
    DiffusionSegmentor does not make: it crashed after the model ran; now exit 2 with the fix."""
    config = osp.join(osp.dirname(str(TINY_ONLINE_CONFIG)),
                      'diffseg-sd14_cityscapes27-unsupervised-512x512.py')
    with pytest.raises(SystemExit) as stop:
        load_tool('test').main([config, '--tta'])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        'tools/test.py: error: --tta: DiffusionSegmentor makes labels, not the logits that '
        'test-time augmentation merges; drop --tta\n')


@pytest.mark.parametrize('options', [[], ['--amp'], ['--preflight-only']])
def test_train_on_a_test_only_config_stops_before_anything_with_the_fix(capsys, options):
    """The training-free evaluation configs passed the pre-flight ("can train here") and then
    failed in mmengine (no train loop), or in --amp (None optimizer): now exit 2, naming test.py."""
    config = osp.join(osp.dirname(str(TINY_ONLINE_CONFIG)),
                      'diffseg-sd14_cityscapes27-unsupervised-512x512.py')
    with pytest.raises(SystemExit) as stop:
        load_tool('train').main([config, *options])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        f'tools/train.py: error: {config} has no train_dataloader, train_cfg, optim_wrapper: it '
        f'evaluates a DiffusionSegmentor and trains nothing; run python tools/test.py {config}\n')


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_cfg_option_nothing_would_read_stops_the_tool_with_the_entry_meant(capsys, tool):
    """``--cfg-options train_dataloder.batch_size=8`` was added beside the config and the run
    went on unchanged; now exit 2 before the pre-flight, naming the entry meant."""
    with pytest.raises(SystemExit) as stop:
        load_tool(tool).main([str(TINY_ONLINE_CONFIG), *(['x.pth'] if tool == 'test' else []),
                              '--cfg-options', 'train_dataloder.batch_size=8'])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        f"tools/{tool}.py: error: --cfg-options train_dataloder.batch_size: the config has no "
        "entry 'train_dataloder' (mmengine would add it, and nothing reads it); did you mean "
        'train_dataloader.batch_size?\n')


def test_a_test_set_shorter_than_the_drawing_interval_has_its_last_batch_drawn(capsys):
    """mmengine draws batches interval, 2 * interval, ...: 10 test batches and mmseg's interval
    50 drew nothing (the README's first run got an empty vis_image/); the interval is lowered to
    the batch count, naming it. A shorter interval, or a hook that does not draw, is left alone."""
    from types import SimpleNamespace
    from mmseg.engine.hooks import SegVisualizationHook
    from mmseg.visualization import SegLocalVisualizer
    test = load_tool('test')
    SegLocalVisualizer.get_instance('drawing-interval-test')  # the hooks draw with it
    drawing, idle, short = (SegVisualizationHook(draw=True, interval=50),
                            SegVisualizationHook(draw=False, interval=50),
                            SegVisualizationHook(draw=True, interval=4))
    from mmdiffseg.models import OnlineLabelVisualizationHook
    training = OnlineLabelVisualizationHook(interval=1000)   # (a training hook: not named)
    runner = SimpleNamespace(test_loop=SimpleNamespace(dataloader=[None] * 10),
                             hooks=[drawing, idle, short, SimpleNamespace(), training])
    test.fit_drawing_interval(runner)
    assert (drawing.interval, idle.interval, short.interval) == (10, 50, 4)
    assert training.interval == 1000
    assert capsys.readouterr().out == ('tools/test.py: the test set has 10 batch(es), fewer than '
                                       'the drawing interval 50: drawing batch 10 (--show-interval '
                                       '1 draws them all)\n')


def test_a_checkpoint_whose_weights_do_not_fit_the_model_is_named(tmp_path, monkeypatch,
                                                                   capsys):
    """A checkpoint trained for 151 classes tested with a 4-class config: mmengine skipped the
    class embedding (a log line) and test.py scored the rest. test.py adds CheckpointFitHook,
    which mmengine calls with the loaded checkpoint before its weights reach the model: a fitting
    one (``module.`` prefix, keys the model lacks) passes, the other stops test.py (exit 2)
    naming the weight, both shapes and the fix; so does one that lacks parameters of the model
    (mmengine would leave them random)."""
    import torch
    from mmseg.registry import HOOKS
    from torch import nn
    test = load_tool('test')
    model = nn.Sequential(nn.Linear(32, 4), nn.Linear(4, 2))
    fitting = dict(state_dict={'module.0.weight': torch.zeros(4, 32), 'extra': torch.zeros(1),
                               '0.bias': torch.zeros(4), '1.weight': torch.zeros(2, 4),
                               '1.bias': torch.zeros(2)})
    other = dict(state_dict={'0.weight': torch.zeros(151, 32), '0.bias': torch.zeros(151),
                             '1.weight': torch.zeros(2, 4)})
    built = []

    class LoadingRunner:  # what Runner.test does with the config's hooks and load_from
        def __init__(self, cfg):
            built.append(cfg)
            self.model = model
            self.hooks = [HOOKS.build(h) for h in cfg.custom_hooks]

        def test(self):
            for hook in self.hooks:
                hook.after_load_checkpoint(self, loaded)

    monkeypatch.setattr(test, 'build_runner', LoadingRunner)
    monkeypatch.setattr(test, 'run_preflight', lambda *args: False)
    monkeypatch.setattr(test, 'start_runner_launcher', lambda cfg, mode: None)
    (tmp_path / 'iter_4.pth').write_bytes(b'w')
    args = [str(TINY_ONLINE_CONFIG), str(tmp_path / 'iter_4.pth')]
    loaded = fitting
    test.main(args)
    assert built[-1].custom_hooks[-1] == dict(type='CheckpointFitHook')
    loaded = other
    with pytest.raises(SystemExit) as exit_info:
        test.main(args)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"tools/test.py: error: CHECKPOINT {tmp_path / 'iter_4.pth'}: the checkpoint's weights do "
        'not fit the model of the config: 0.weight is [151, 32] there, [4, 32] in the model (and '
        '1 more); it was trained with another config (another class count, another model?), or '
        'is no whole checkpoint of this one: give the config it was trained with\n')
    loaded = dict(state_dict={'0.bias': torch.zeros(4), '1.weight': torch.zeros(2, 4)})
    with pytest.raises(SystemExit):
        test.main(args)
    assert ("do not fit the model of the config: it lacks 0.weight, of the 4 parameters of the "
            'model (and 1 more); ' in capsys.readouterr().err)


def test_a_fitting_checkpoint_fits_the_test_time_augmented_model():
    """--tta: the runner's model is SegTTAModel(module=model), into whose module mmengine loads;
    its own keys (module.backbone...) made every parameter look missing, refusing every model
    config's own checkpoint."""
    from mmseg.models import SegTTAModel
    from torch import nn

    from mmdiffseg.models.checkpoint_fit_hook import fit_problem
    class Net(nn.Sequential):
        def test_step(self, data):   # what SegTTAModel asks of its module
            return data
    net = Net(nn.Linear(3, 4), nn.Linear(4, 2))
    assert fit_problem(SegTTAModel(module=net), dict(state_dict=net.state_dict())) is None
    part = dict(state_dict={'0.weight': net[0].weight})
    assert fit_problem(SegTTAModel(module=net), part).startswith('it lacks 0.bias, of the 4 ')


def test_a_checkpoint_without_batchnorm_counters_fits():
    """An older or converted checkpoint lacks BatchNorm's num_batches_tracked buffers: mmengine
    reports those, the model's parameters are all there."""
    from torch import nn

    from mmdiffseg.models.checkpoint_fit_hook import fit_problem
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    weights = {k: v for k, v in net.state_dict().items() if 'num_batches_tracked' not in k}
    assert len(weights) < len(net.state_dict())
    assert fit_problem(net, dict(state_dict=weights)) is None


@pytest.mark.parametrize('tool', ['train', 'test', 'prefill_labels'])
def test_a_cfg_option_value_with_a_space_is_refused(tool, capsys):
    """mmengine removes the spaces of a --cfg-options value: a cache folder '/data/my labels'
    became '/data/mylabels', a new folder the run labelled into in silence. Spaces that
    separate a list's items pass."""
    module = load_tool(tool)
    spaced = 'train_dataloader.dataset.pipeline.2.cache.cache_dir=/data/my labels'
    with pytest.raises(SystemExit) as stop:
        module.parse_args([str(TINY_ONLINE_CONFIG), '--cfg-options', spaced])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    # (a derived config cannot set pipeline item 2 alone: the advice to set the key there failed)
    assert f"--cfg-options {spaced}: mmengine removes the spaces inside a value (it would read " \
           "'/data/mylabels'); redefine train_dataloader.dataset.pipeline whole (a derived " \
           "config cannot set one item of a list) in a config file that inherits this one" in err
    with pytest.raises(SystemExit):
        module.parse_args([str(TINY_ONLINE_CONFIG), '--cfg-options', 'work_dir=/my runs/a'])
    assert "; set work_dir in a config file that inherits this one" in capsys.readouterr().err
    args = module.parse_args([str(TINY_ONLINE_CONFIG), '--cfg-options', 'a=[1, 2]', 'b=(x, y)',
                              "c='/data/labels'"])
    assert args.cfg_options == {'a': [1, 2], 'b': ('x', 'y'), 'c': '/data/labels'}


@pytest.mark.parametrize('tool', ['train', 'test', 'prefill_labels'])
def test_a_config_that_fails_to_run_is_one_line_naming_it(tool, tmp_path, capsys):
    """A syntax error or a missing ``_base_`` ended train.py, test.py and prefill_labels.py in
    mmengine's traceback (exit 1), where the offline tools named the config."""
    config = tmp_path / 'mine.py'
    config.write_text("_base_ = ['./not_there.py']\n")
    argv = [str(config)] + ([str(tmp_path / 'iter_1.pth')] if tool == 'test' else [])
    if tool == 'prefill_labels':
        from test_offline_tools import run_in_process
        err = run_in_process(tool, *argv, expect=2)
    else:
        with pytest.raises(SystemExit) as stop:
            load_tool(tool).main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
    assert f'error: cannot read config {config} (CONFIG): FileNotFoundError: ' in err
    assert 'not_there.py' in err and 'Traceback' not in err


@pytest.mark.parametrize('option, lacking, message', [
    (['--show-dir', 'pics'], 'visualization',
     "--show / --show-dir draw with default_hooks.visualization, which the config lacks: add "
     "default_hooks = dict(visualization=dict(type='SegVisualizationHook')) to it"),
    (['--tta'], 'tta_model',
     "--tta needs tta_pipeline and tta_model in the config, which lacks tta_model: define them "
     "as mmseg's dataset configs do (mmseg::_base_/datasets/pascal_voc12.py), or drop --tta")])
def test_drawing_or_tta_with_a_config_lacking_their_entries_is_one_line(
        option, lacking, message, tmp_path, capsys):
    """A user's config without them: RuntimeError tracebacks (exit 1) from tools/test.py."""
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    (cfg.default_hooks if lacking == 'visualization' else cfg).pop(lacking)
    config = tmp_path / 'mine.py'
    cfg.dump(str(config))
    (tmp_path / 'iter_1.pth').write_bytes(b'w')
    with pytest.raises(SystemExit) as stop:
        load_tool('test').main([str(config), str(tmp_path / 'iter_1.pth'), *option])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f'tools/test.py: error: {message}\n'
