"""Pre-flight on the options a config gives (mmdiffseg.preflight_options) and on the weights it
names: keys below the top level, the label cache's settings, head lists the model lacks, local
folders, and the message of a distributed run."""
import json
import os
import subprocess
import sys

import pytest
from e2e_helpers import REPO, TINY_ONLINE_CONFIG, free_port, set_label_cache
from mmengine.config import Config
from sample_data import shared_path

import mmdiffseg  # noqa: F401
from mmdiffseg import preflight
from mmdiffseg.preflight_options import check_cache_keys, check_options

SECTIONS = ('model', 'train_dataloader', 'val_dataloader', 'test_dataloader')
MAIN_CONFIG = REPO / 'configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'
CACHE = 'train_dataloader.dataset.pipeline.2.cache'


@pytest.fixture(autouse=True)
def no_network_probes(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    preflight.reachable.cache_clear()


def label_caches(cfg):
    return [(path, node) for name in SECTIONS if cfg.get(name)
            for path, node in preflight.walk(cfg[name].to_dict(), name)
            if isinstance(node.get('generator'), dict) and 'type' not in node]


@pytest.mark.parametrize('config', sorted(str(p.relative_to(REPO)) for p in
                                          (REPO / 'configs').glob('[!_]*/*.py')))
def test_every_shipped_config_takes_each_of_its_options(config):
    """No false alarm: every key of every shipped config, at any depth, is an option of the
    class it is given to (norm / init / assigner entries, built elsewhere, are not read)."""
    cfg = Config.fromfile(str(REPO / config))
    assert check_options(cfg, SECTIONS) == []
    assert [m for path, cache in label_caches(cfg) for m in check_cache_keys(cache, path)] == []


def test_misspelt_keys_below_the_top_level_are_named_with_their_full_key():
    """A misspelt key of the head, the data preprocessor, a loss, a transform or a wrapped
    dataset: mmdet's head takes ``**kwargs`` and would drop it silently, the others would stop
    the runner with a TypeError traceback."""
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2,
                                        dataset=cfg.train_dataloader.dataset)
    cfg.merge_from_dict({'model.decode_head.num_clases': 21,
                         'model.data_preprocessor.engine_dtyp': 'float32',
                         'model.decode_head.loss_cls.use_sigmoidd': False,
                         'train_dataloader.dataset.dataset.pipeline.1.ann_fil': 'x',
                         'train_dataloader.dataset.dataset.data_roto': 'y',
                         'model.backbone.norm_cfg.requires_grad': True})  # BN's, not ResNet's
    found = {m.where[0]: m for m in check_options(cfg, SECTIONS)}
    expected = {
        'model.decode_head.num_clases': ('Mask2FormerHead', 'num_classes'),
        'model.data_preprocessor.engine_dtyp': ('DiffusionLabelPreprocessor', 'engine_dtype'),
        'model.decode_head.loss_cls.use_sigmoidd': ('CrossEntropyLoss', 'use_sigmoid'),
        'train_dataloader.dataset.dataset.pipeline.1.ann_fil': ('LoadImageLevelLabels',
                                                                'ann_file'),
        'train_dataloader.dataset.dataset.data_roto': ('PascalVOCDataset', 'data_root')}
    assert set(found) == set(expected)
    for key, (owner, near) in expected.items():
        where, typo = key.rsplit('.', 1)
        assert found[key].what == (f'{where}: {owner} has no option {typo!r} '
                                   f'(did you mean {near!r}?)')
        assert found[key].fix.startswith(f'set {where}.{near} instead of {key}')


def test_a_transform_that_refuses_its_settings_is_named_before_the_run():
    """--cfg-options ...crop_size=[100,100] (a list: mmseg asserts a tuple) passed, then the
    runner stopped building the dataloader with an AssertionError traceback."""
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    cfg.merge_from_dict({'train_dataloader.dataset.pipeline.4.crop_size': [100, 100]})
    (item,) = check_options(cfg, SECTIONS)
    assert item.what == ('train_dataloader.dataset.pipeline.4: RandomCrop refuses its settings '
                         '(The expected crop_size is an integer, or a tuple containing two)')
    assert '(H,W)' in item.fix
    cfg.merge_from_dict({'train_dataloader.dataset.pipeline.4.crop_size': (100, 100)})
    assert check_options(cfg, SECTIONS) == []


def test_dataloader_keys_and_workers_are_checked_before_the_run():
    """train_dataloader.batchsize (torch's TypeError once the runner builds it) is named with the
    nearest key; persistent_workers without workers (torch's ValueError) with the fix."""
    cfg = Config.fromfile(str(MAIN_CONFIG))
    cfg.merge_from_dict({'train_dataloader.batchsize': 8, 'train_dataloader.num_workers': 0})
    found = {m.where[0]: m for m in check_options(cfg, SECTIONS)}
    assert found['train_dataloader.batchsize'].what == (
        "train_dataloader: torch's DataLoader has no option 'batchsize' (did you mean "
        "'batch_size'?)")
    assert found['train_dataloader.persistent_workers'].fix == (
        '--cfg-options train_dataloader.persistent_workers=False with '
        'train_dataloader.num_workers=0')
    assert len(found) == 2
    # mmengine's runner takes these two itself (a short debugging epoch, a warning switched off)
    cfg = Config.fromfile(str(MAIN_CONFIG))
    cfg.merge_from_dict({'train_dataloader.num_batch_per_epoch': 2,
                         'val_dataloader.disable_subprocess_warning': True})
    assert check_options(cfg, SECTIONS) == []


def test_an_old_configs_label_cache_on_the_preprocessor_is_named_with_where_it_went():
    """model.data_preprocessor.label_cache (an earlier version's place): 'did you mean
    label_batch_size?' was the fix, beside checks of the unused entry's model and heads; now one
    item saying where the settings went, as the preprocessor's own error does."""
    from mmdiffseg.models.preprocessor import DiffusionLabelPreprocessor
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    old = dict(cache_dir='x', model='/nowhere/sd', generator=dict(type='ISeg', vocabulary='voc'))
    cfg.merge_from_dict({'model.data_preprocessor.label_cache': old})
    key = 'model.data_preprocessor.label_cache'
    named = [m for m in preflight.check(cfg, 'train') if any(w.startswith(key) for w in m.where)]
    assert [m.where for m in named] == [[key]]
    assert named[0].what == ("model.data_preprocessor: DiffusionLabelPreprocessor no longer "
                             "takes 'label_cache'")
    assert named[0].fix.endswith('set once, in LoadPseudoLabel(cache=...) of the train pipeline')
    with pytest.raises(TypeError, match='label_cache is no longer an argument; the label cache'):
        DiffusionLabelPreprocessor(label_cache=old)


@pytest.mark.parametrize('key', [f'{CACHE}.generator', 'model.generator'])
def test_a_generator_given_as_a_string_is_named_with_how_to_set_it(key):
    """--cfg-options ...generator="dict(type='DiffSeg')" gives a string (mmengine reads no
    dict(...)): every check passed it and the run stopped at its first batch, an AttributeError
    in the registry."""
    config = TINY_ONLINE_CONFIG if key.startswith(CACHE) else \
        REPO / 'configs/mask2former/diffseg-sd14_cocostuff27-unsupervised-512x512.py'
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({key: "dict(type='DiffSeg')"})
    (item,) = [m for m in preflight.check(cfg, 'train' if key.startswith(CACHE) else 'test')
               if m.where == [key]]
    assert item.what == (f'{key} is "dict(type=\'DiffSeg\')", no generator config (a dict '
                         'with a type)')
    # setting .type=DiffSeg key by key (the advice before) kept the first type's options, each
    # then refused; another type takes a derived config
    assert item.fix.startswith(f'set its options one by one (--cfg-options {key}.OPTION=VALUE')
    assert "for another generator type, a derived config with generator=dict(_delete_=True, " \
           "type='DiffSeg', ...)" in item.fix


def test_the_label_cache_settings_are_checked_key_by_key(tmp_path):
    """``--cfg-options ...cache.modle=...`` (the docs' own key, misspelt) stopped the run with
    a KeyError traceback; a missing setting is named too."""
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    cache = dict(cache_dir=str(tmp_path), modle='x', generator=dict(type='ISeg'))
    set_label_cache(cfg, cache)
    found = {m.what: m for m in preflight.check(cfg, 'train')}
    typo = found[f"{CACHE}: the label cache has no option 'modle' (did you mean 'model'?)"]
    assert typo.fix.startswith(f'set {CACHE}.model instead of {CACHE}.modle')
    assert found[f"{CACHE}: the label cache has no 'model' setting"].where == [f'{CACHE}.model']
    set_label_cache(cfg, dict(cache, model='x', wait_timeout='abc'))  # float('abc') at a batch
    found = {m.what: m for m in preflight.check(cfg, 'train')}
    assert found[f"{CACHE}.wait_timeout is 'abc': seconds to wait for a label another process is "
                 'making'].fix.startswith(f'--cfg-options {CACHE}.wait_timeout=600')


@pytest.mark.parametrize('sd', ['stable-diffusion-v1-4', 'stable-diffusion-2-1-base'])
def test_head_lists_the_model_lacks_are_named_with_the_generators_key(sd):
    """iSeg's released VOC head lists are SD 2.1-base's: on SD 1.4 (40 heads at 16x16) the run
    would stop at its first batch, and the engine's fix names the tools' options. Pre-flight
    reads the U-Net's config (no weights) and names the keys under the label cache; its fix
    works."""
    cfg = Config.fromfile(str(MAIN_CONFIG))
    cfg.merge_from_dict({f'{CACHE}.model': str(shared_path('sd_configs', sd))})
    where = f'{CACHE}.generator'
    found = [m for m in preflight.check(cfg, 'train') if m.where == [where]]
    if sd == 'stable-diffusion-2-1-base':
        assert found == []
        return
    assert len(found) == 1 and found[0].what.startswith(f'{where} cannot run on ')
    assert 'have 40 heads in all' in found[0].what and 'fix:' not in found[0].what
    assert found[0].fix.startswith(f'--cfg-options {where}.cross_heads=None '
                                   f'{where}.self_heads=None')
    cfg.merge_from_dict({f'{where}.cross_heads': None, f'{where}.self_heads': None})
    assert [m for m in preflight.check(cfg, 'train') if m.where == [where]] == []


def test_resolutions_the_model_lacks_are_named_before_the_load():
    """A DiffSeg resolution SD 1.4 has no layer at (128): the check found the engine's refusal
    from the config and dropped it; the run stopped after loading the weights."""
    cfg = Config.fromfile(str(REPO / 'configs/mask2former/'
                              'diffseg-sd14_cityscapes27-unsupervised-512x512.py'))
    cfg.merge_from_dict({'model.sd_model': str(shared_path('sd_configs', 'stable-diffusion-v1-4')),
                         'model.generator.resolutions': [128]})
    (item,) = [m for m in preflight.check(cfg, 'test') if m.where == ['model.generator']]
    assert item.what.endswith("no self-attention layer at resolution 128 for this input; valid "
                              'resolutions: [64, 32, 16, 8]')
    assert item.fix.startswith("choose in model.generator what '")
    cfg.merge_from_dict({'model.generator.resolutions': [64]})
    assert [m for m in preflight.check(cfg, 'test') if m.where == ['model.generator']] == []


def test_a_missing_folder_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    """A path (or a name whose first part is a local folder) gets the folder wording; only a
    name that can be a hub id gets ``hf download``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'work_dirs').mkdir()
    keys = ['x.model']
    for model in (str(tmp_path / 'sd21'), './sd21', 'work_dirs/tiny-sd', 'a/b/c'):
        [missing] = preflight.check_sd_model(model, keys)
        assert missing.what == f'Stable Diffusion folder {model!r} not found'
        assert 'hf download' not in missing.fix and '--cfg-options x.model=' in missing.fix
    [missing] = preflight.check_sd_model('someorg/sd21', keys)
    assert 'not in the Hugging Face cache' in missing.what
    assert missing.fix.startswith('where there is network: hf download someorg/sd21')


def config_without_data(tmp_path, pipeline=()):
    config = tmp_path / 'cfg.py'
    config.write_text("model = dict(type='EncoderDecoder')\n"
                      "train_dataloader = dict(dataset=dict(type='PascalVOCDataset', "
                      f"data_root={json.dumps(str(tmp_path / 'none'))}, "
                      f"pipeline={list(pipeline)!r}))\n")
    return config


def test_distributed_ranks_print_the_report_once(tmp_path):
    """Under torchrun (e.g. tools/prefill_labels.py's ranks) every rank runs pre-flight; only
    local rank 0 prints, all exit 2."""
    config = config_without_data(tmp_path)
    script = ('import sys; from mmengine.config import Config; import mmdiffseg; '
              'from mmdiffseg.preflight import ensure_ready; '
              'ensure_ready(Config.fromfile(sys.argv[1]), sys.argv[1])')
    for rank, printed in (('0', True), ('1', False)):
        run = subprocess.run([sys.executable, '-c', script, str(config)], capture_output=True,
                             text=True, env={**os.environ, 'LOCAL_RANK': rank})
        assert run.returncode == 2, run.stderr
        assert ('Pre-flight check:' in run.stderr) is printed, run.stderr


@pytest.mark.slow
@pytest.mark.parametrize('script', ['dist_train', 'dist_prefill'])
def test_dist_scripts_check_once_before_any_rank_starts(tmp_path, script):
    """tools/dist_train.sh and dist_prefill.sh run the check once (--preflight-only) before
    torchrun: a config that cannot run stops there, its report printed once, exit 2, and torchrun
    never starts; with --preflight-only only the check runs, and a ready config exits 0."""
    calls = tmp_path / 'calls.txt'
    python = tmp_path / 'python'  # the interpreter the script runs, noting each start
    python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, 'PYTHON': str(python), 'PORT': str(free_port())}

    def dist_train(config, *options):
        calls.write_text('')
        done = subprocess.run(['bash', str(REPO / f'tools/{script}.sh'), str(config), '2',
                               *options], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        return done, calls.read_text().splitlines()

    online = [dict(type='LoadPseudoLabel', cache=dict(  # (else: nothing to prefill)
        cache_dir=str(tmp_path / 'cache'), model=str(tmp_path / 'sd'),
        generator=dict(type='DiffSeg')))] if script == 'dist_prefill' else []
    failed, started = dist_train(config_without_data(tmp_path, online))
    assert failed.returncode == 2 and failed.stderr.count('Pre-flight check:') == 1, failed.stderr
    assert 'data root' in failed.stderr and 'Traceback' not in failed.stderr
    assert len(started) == 1 and started[0].endswith('--launcher pytorch --preflight-only')
    if script == 'dist_prefill':   # a config ready to prefill: test_prefill_and_ranks.py
        return
    ready = tmp_path / 'ready.py'
    ready.write_text('model = dict(type="EncoderDecoder")\nwork_dir = "w"\n')
    checked, started = dist_train(ready, '--preflight-only')
    assert checked.returncode == 0, checked.stderr
    assert f'Pre-flight check: {ready} can train here' in checked.stdout
    assert len(started) == 1 and 'torch.distributed.run' not in started[0]


@pytest.mark.parametrize('script', ['dist_train', 'dist_prefill', 'dist_test'])
def test_dist_scripts_refuse_several_nodes_without_a_master_address(tmp_path, script):
    """NNODES=2 without MASTER_ADDR: every node waited for a master on itself (127.0.0.1),
    printing nothing, until torchrun's rendezvous timed out."""
    env = {k: v for k, v in os.environ.items() if k != 'MASTER_ADDR'}
    env.update(NNODES='2', NODE_RANK='1', PYTHON='true')  # a pre-flight that passes

    def dist(*options):
        return subprocess.run(['bash', str(REPO / f'tools/{script}.sh'), 'x.py', '2', *options],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    for options in ((), ('--skip-preflight',)):
        done = dist(*options)
        assert done.returncode == 2 and done.stderr == (
            f'tools/{script}.sh: NNODES=2 but MASTER_ADDR is not set: set it on every node to '
            'the address of the node with NODE_RANK=0\n')
    assert dist('--preflight-only').returncode == 0  # a check alone needs no master


def test_datasets_a_concat_dataset_wraps_are_checked_with_their_index():
    """``ConcatDataset(datasets=[...])``: each wrapped dataset's keys, named by its index."""
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    inner = cfg.train_dataloader.dataset
    cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[inner, inner])
    cfg.merge_from_dict({'train_dataloader.dataset.datasets.1.data_roto': 'y'})
    [found] = check_options(cfg, SECTIONS)
    where = 'train_dataloader.dataset.datasets.1'
    assert found.where == [f'{where}.data_roto']
    assert found.what == f"{where}: PascalVOCDataset has no option 'data_roto' (did you mean " \
        "'data_root'?)"


def test_metrics_of_an_evaluator_list_are_named_by_their_index():
    """A list of metrics names each by its index; a single metric by the evaluator's key."""
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    cfg.val_evaluator = [dict(type='IoUMetric'), dict(type='IoUMetric', iou_metric=['mIoU'])]
    cfg.test_evaluator = dict(type='IoUMetric', num_clases=21)
    found = {m.where[0]: m for m in check_options(cfg, SECTIONS)}
    assert set(found) == {'val_evaluator.1.iou_metric', 'test_evaluator.num_clases'}
    assert found['val_evaluator.1.iou_metric'].fix.startswith(
        'set val_evaluator.1.iou_metrics instead of val_evaluator.1.iou_metric')


@pytest.mark.parametrize('key', ['cache_dir', 'model', 'generator'])
def test_each_required_label_cache_setting_is_named_when_missing(key):
    """``cache_dir``, ``model`` and ``generator`` are required; ``wait_timeout`` is not."""
    cache = dict(cache_dir='c', model='m', generator=dict(type='ISeg'))
    del cache[key]
    [found] = check_cache_keys(cache, 'x.cache')
    assert found.what == f"x.cache: the label cache has no {key!r} setting"
    assert found.fix == f'set x.cache.{key} (in the config or --cfg-options)'
    assert found.where == [f'x.cache.{key}']


@pytest.mark.parametrize('timeout,refused', [(True, True), (-1, True), ('600', True),
                                             (0, False), (2.5, False), (600, False)])
def test_a_wait_timeout_must_be_a_number_of_seconds(timeout, refused):
    """``wait_timeout=True`` is a bool, not seconds; a negative or text value is refused too."""
    cache = dict(cache_dir='c', model='m', generator=dict(type='ISeg'), wait_timeout=timeout)
    found = check_cache_keys(cache, 'x.cache')
    assert [m.where for m in found] == ([['x.cache.wait_timeout']] if refused else [])
    if refused:
        assert found[0].what.startswith(f'x.cache.wait_timeout is {timeout!r}: seconds')


def test_a_generator_refused_for_two_options_names_none_of_them_alone():
    """Without either bad option the generator is still refused: no one option is to blame, so
    the message is the generator's own and the fix names no key; one bad option is named."""
    where = 'model.generator'
    (item,) = preflight.check_generator(dict(type='DiffSeg', kl_thresholds=[], resolutions=[]),
                                        where)
    assert item.what == f'{where}: DiffSeg.kl_thresholds must hold at least one threshold'
    assert item.fix == f'correct {where}.OPTION in the config or with --cfg-options'
    (item,) = preflight.check_generator(dict(type='DiffSeg', kl_thresholds=[]), where)
    assert item.what.startswith(f'{where}.kl_thresholds=[]: ')


def test_head_lists_are_not_checked_on_a_unet_config_that_does_not_load(tmp_path):
    """A ``unet/config.json`` diffusers cannot read is no head-layout problem (the model check
    names the folder): the generator's heads are not refused for it."""
    (tmp_path / 'unet').mkdir()
    (tmp_path / 'unet' / 'config.json').write_text('not json')
    generator = dict(type='ISeg', preset='wsss_voc')   # SD 2.1-base's head lists
    assert preflight.check_head_layout(generator, str(tmp_path), 'model.generator') == []


def test_a_unet_config_diffusers_refuses_is_not_blamed_on_the_head_lists(tmp_path, sd_config_dir):
    """SD 2.1-base's config with one up block removed: diffusers refuses it (a ValueError, as a
    head-layout error is), which is no reason to advise ``cross_heads=None``; the engine's check
    raises it as an OSError naming the file."""
    from mmdiffseg.attention.unet_layers import check_capture_on_config
    from mmdiffseg.generators import ISeg
    config = json.loads((sd_config_dir('stable-diffusion-2-1-base') / 'unet' /
                         'config.json').read_text())
    config['up_block_types'] = config['up_block_types'][1:]
    (tmp_path / 'unet').mkdir()
    (tmp_path / 'unet' / 'config.json').write_text(json.dumps(config))
    generator = dict(type='ISeg', preset='wsss_voc')
    assert preflight.check_head_layout(generator, str(tmp_path), 'model.generator') == []
    with pytest.raises(OSError, match=rf'{tmp_path}/unet/config.json: diffusers builds no U-Net '
                                      r'from it \(ValueError: Must provide the same number'):
        check_capture_on_config(tmp_path, ISeg.from_preset('wsss_voc').capture_spec)


def test_a_key_one_pipeline_step_off_is_sent_to_the_step_that_takes_it():
    """``pipeline.3.cache.model`` (the label cache is step 2): RandomResize passes ``**kwargs``
    to its ``resize_type``, so the key passed the check and the run stopped with a traceback
    naming no key. Now named, with the step that takes it; a misspelt resize option is named
    with the nearest of RandomResize's and Resize's options."""
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    where = 'train_dataloader.dataset.pipeline'
    assert cfg.train_dataloader.dataset.pipeline[3].type == 'RandomResize'
    cfg.merge_from_dict({f'{where}.3.cache.model': 'x', f'{where}.3.keep_ratoi': True})
    cache, typo = check_options(cfg, SECTIONS)
    assert cache.what == (f"{where}.3: RandomResize has no option 'cache'; step 2 "
                          '(LoadPseudoLabel) has')
    assert cache.fix.startswith(f'set {where}.2.cache instead of {where}.3.cache (the step '
                                'index is off')
    assert typo.what == f"{where}.3: RandomResize has no option 'keep_ratoi' (did you mean " \
                        "'keep_ratio'?)"
    cfg.train_dataloader.dataset.pipeline[3].pop('cache')
    cfg.train_dataloader.dataset.pipeline[3].pop('keep_ratoi')
    cfg.train_dataloader.dataset.pipeline[3].update(resize_type='Resize', interpolation='area')
    assert check_options(cfg, SECTIONS) == []     # Resize's own options pass
