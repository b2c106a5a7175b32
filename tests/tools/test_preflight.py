"""The pre-flight check of tools/train.py and tools/test.py (mmdiffseg.preflight)."""
import copy
import functools
import os
import re
import subprocess
import sys

import pytest
import torch
from e2e_helpers import REPO, TINY_ONLINE_CONFIG, load_tool, make_voc_root, set_label_cache
from mmengine.config import Config
from sample_data import shared_path

import mmdiffseg  # noqa: F401
from mmdiffseg import preflight

MAIN_CONFIG = 'configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'


def readme_main_job() -> str:
    """The README's main-job command (after the install), as written."""
    text = (REPO / 'README.md').read_text()
    section = text.split('## The two commands', 1)[1]
    block = re.search(r'```bash\n(.*?)\n```', section, re.S).group(1)
    return block.split('&&', 1)[1].strip()


def fresh_clone(tmp_path):
    """A folder laid out like a fresh clone (tools/ and configs/ of this checkout, no data,
    no work_dirs) and an environment with empty caches, offline, without a GPU."""
    clone = tmp_path / 'clone'
    clone.mkdir()
    for name in ('tools', 'configs'):
        (clone / name).symlink_to(REPO / name)
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'),
               TORCH_HOME=str(tmp_path / 'torch'), CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
    return clone, env


@pytest.fixture(autouse=True)
def no_network_probes(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    preflight.reachable.cache_clear()


@pytest.mark.slow
def test_readme_main_job_on_a_fresh_clone_lists_every_missing_piece_once(tmp_path):
    clone, env = fresh_clone(tmp_path)
    command = readme_main_job()
    assert command == f'python tools/train.py {MAIN_CONFIG}'
    done = subprocess.run([sys.executable, *command.split()[1:]], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    message = done.stderr[done.stderr.index('Pre-flight check'):]
    assert out.count('Pre-flight check') == 1 and 'Traceback' not in out
    expected = [
        'PascalVOCDataset data root data/VOCdevkit/VOC2012 does not exist',
        'image-level labels data/VOCdevkit/VOC2012/image_labels.json not found',
        'torchvision://resnet50',
        'Stable Diffusion weights',
        'a CUDA device',
    ]
    items = re.findall(r'^\d+\. (.*)$', message, re.M)
    assert len(items) == len(expected), message
    for text in expected:
        assert sum(text in item for item in items) == 1, (text, message)
    assert message.count('   fix: ') == len(expected)
    assert 'python tools/dataset_converters/voc_aug.py data/VOCdevkit' in message
    assert '--skip-preflight' in message
    assert len(out.splitlines()) < 60 and not (clone / 'work_dirs').exists()  # no runner, no log


@pytest.fixture(scope='module')
def tiny_sd():
    from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
    return cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'))


@functools.lru_cache(maxsize=1)
def _tiny_online_config() -> Config:
    return Config.fromfile(str(TINY_ONLINE_CONFIG))


def tiny_online_config(tmp_path, sd_model) -> Config:
    cfg = copy.deepcopy(_tiny_online_config())
    root = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'voc')
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.update(data_root=str(root), img_suffix='.png')
    set_label_cache(cfg, dict(cache_dir=str(tmp_path / 'cache'), model=str(sd_model),
                              generator=cfg.tiny_label_generator.to_dict()))
    return cfg


def test_complete_setup_passes(tmp_path, tiny_sd):
    assert preflight.check(tiny_online_config(tmp_path, tiny_sd), 'train') == []
    assert preflight.check(tiny_online_config(tmp_path, tiny_sd), 'test') == []


def test_each_missing_piece_is_named_with_its_setting(tmp_path, tiny_sd):
    cfg = tiny_online_config(tmp_path, tiny_sd)
    root = tmp_path / 'voc'
    (root / 'ImageSets/Segmentation/aug.txt').unlink()
    cfg.train_dataloader.dataset.pipeline[1].ann_file = str(tmp_path / 'labels.json')
    set_label_cache(cfg, dict(cache_dir='c', model=str(tmp_path / 'no-sd'),
                              generator=dict(type='ISeg', vocabulary='voc')))
    cfg.load_from = str(tmp_path / 'iter_4.pth')
    missing = {m.what: m for m in preflight.check(cfg, 'train')}
    assert set(missing) == {
        f'PascalVOCDataset split file {root}/ImageSets/Segmentation/aug.txt not found',
        f'image-level labels {tmp_path}/labels.json not found',
        f"Stable Diffusion folder '{tmp_path}/no-sd' not found",
        f'checkpoint {tmp_path}/iter_4.pth not found'}
    sd = missing[next(k for k in missing if k.startswith('Stable'))]
    assert sd.where == ['train_dataloader.dataset.pipeline.2.cache.model']  # the one setting
    assert '--cfg-options train_dataloader.dataset.pipeline.2.cache.model=/path/to/diffusers-folder' \
        in sd.fix
    labels = missing[f'image-level labels {tmp_path}/labels.json not found']
    assert 'train_dataloader.dataset.pipeline.1.ann_file=None' in labels.fix


def test_cached_weights_count_offline(tmp_path, monkeypatch):
    """A backbone URL in the torch hub cache and a hub id in the Hugging Face cache are found;
    offline, anything else is missing."""
    from huggingface_hub import constants
    url = 'https://download.example.org/weights/resnet-abc123.pth'
    cfg = Config(dict(model=dict(
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=url)),
        data_preprocessor=dict(sd_model='org/sd-model'))))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    missing = [m.what for m in preflight.check(cfg, 'test')]
    assert len(missing) == 2 and url in missing[0] and "'org/sd-model'" in missing[1]

    (tmp_path / 'torch/hub/checkpoints').mkdir(parents=True)
    (tmp_path / 'torch/hub/checkpoints/resnet-abc123.pth').write_bytes(b'w')
    snapshot = tmp_path / 'hf/models--org--sd-model/snapshots/0123abcd'
    snapshot.mkdir(parents=True)
    (snapshot / 'model_index.json').write_text('{}')
    (tmp_path / 'hf/models--org--sd-model/refs').mkdir()
    (tmp_path / 'hf/models--org--sd-model/refs/main').write_text('0123abcd')
    assert preflight.check(cfg, 'test') == []


def test_a_folder_without_model_index_is_not_a_diffusers_folder(tmp_path):
    (tmp_path / 'sd').mkdir()
    cfg = Config(dict(model=dict(type='DiffusionSegmentor', sd_model=str(tmp_path / 'sd'))))
    (item,) = preflight.check(cfg, 'test')
    assert 'has no model_index.json' in item.what and item.where == ['model.sd_model']


class RecordingRunner:
    """Stands in for the runner: records the config it is built with."""
    built = []

    def __init__(self, cfg):
        self.built.append(cfg)

    def train(self):
        pass

    test = train


def test_tools_stop_before_the_runner_unless_skipped(tmp_path, tiny_sd, monkeypatch):
    """Missing test data stops tools/test.py (exit 2) before its runner is built, a missing
    load_from tools/train.py; --skip-preflight goes straight to the runner."""
    cfg = tiny_online_config(tmp_path, tiny_sd)
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'no-test-data')
    config = tmp_path / 'tiny.py'
    cfg.dump(str(config))
    (tmp_path / 'iter_4.pth').write_bytes(b'w')
    built = RecordingRunner.built = []
    for name in ('test', 'train'):
        tool = load_tool(name)
        monkeypatch.setattr(tool, 'build_runner', RecordingRunner)
        checkpoint = tmp_path / ('iter_4.pth' if name == 'test' else 'missing.pth')
        args = [str(config), str(checkpoint)] if name == 'test' else \
            [str(config), '--cfg-options', f'load_from={checkpoint}']
        with pytest.raises(SystemExit) as exit_info:
            tool.main(args)
        assert exit_info.value.code == 2 and not built
        tool.main(args + ['--skip-preflight'])
        assert len(built) == 1 and built.pop().load_from == str(checkpoint)


def test_config_tools_name_the_setuptools_fix_without_pkg_resources(monkeypatch, tmp_path,
                                                                    capsys):
    """setuptools>=82 has no pkg_resources, which mmengine needs for mmseg:: bases: the tools
    stop naming the pin (one line, exit 2) instead of mmengine's ModuleNotFoundError traceback;
    a config without mmseg:: bases still loads."""
    from mmdiffseg.apis.builders import read_config
    from mmdiffseg.apis.io import UserInputError
    monkeypatch.setitem(sys.modules, 'pkg_resources', None)
    fix = r'pip install "setuptools>=77,<82"'
    with pytest.raises(SystemExit) as stop:
        load_tool('train').main([str(REPO / MAIN_CONFIG)])
    assert stop.value.code == 2 and re.search(re.escape(fix), capsys.readouterr().err)
    with pytest.raises(UserInputError, match=re.escape(fix)):
        load_tool('prefill_labels').main([str(REPO / MAIN_CONFIG)])
    with pytest.raises(UserInputError, match=r'--dataset-config.*' + re.escape(fix)):
        read_config(str(REPO / MAIN_CONFIG), 'dataset config', '--dataset-config')
    plain = tmp_path / 'plain.py'
    plain.write_text('foo = 1\n')
    assert read_config(str(plain), 'generator config', '--config').foo == 1


def test_prefill_checks_only_what_it_reads(tmp_path, tiny_sd, capsys):
    """tools/prefill_labels.py checks the training data, its image-level labels and the label
    cache's model (not the backbone, validation data or load_from) and stops with the message
    before any work; --skip-preflight goes on to the labelling."""
    cfg = tiny_online_config(tmp_path, tiny_sd)
    cfg.load_from = str(tmp_path / 'iter_4.pth')                      # training needs it
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'r50.pth'))
    cfg.val_dataloader.dataset.data_root = str(tmp_path / 'no-val')
    assert preflight.check(cfg, 'prefill') == []
    assert len(preflight.check(cfg, 'train')) == 3
    set_label_cache(cfg, dict(cache_dir=str(tmp_path / 'c'), model=str(tmp_path / 'no-sd'),
                              generator=cfg.tiny_label_generator.to_dict()))
    config = tmp_path / 'tiny.py'
    cfg.dump(str(config))
    with pytest.raises(SystemExit) as exit_info:
        load_tool('prefill_labels').main([str(config), '--device', 'cpu'])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'cannot prefill here yet; 1 thing to fix first' in err
    assert f"Stable Diffusion folder '{tmp_path}/no-sd' not found" in err
    assert not (tmp_path / 'c').exists()
    with pytest.raises(Exception) as error:  # past the check: the engine load names the folder
        load_tool('prefill_labels').main([str(config), '--device', 'cpu', '--skip-preflight'])
    assert 'no-sd' in str(error.value)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message without CUDA')


@NO_CUDA
def test_testing_a_checkpoint_needs_no_init_weights_nor_the_labelers_gpu(tmp_path, monkeypatch):
    """tools/test.py CONFIG CHECKPOINT on the CPU, offline: Runner.test loads the checkpoint (no
    ImageNet backbone weights) and the online labeler's float16 engine runs only in training."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))          # no R50 in this cache
    root = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'voc')
    cfg = Config.fromfile(str(REPO / MAIN_CONFIG))
    cfg.test_dataloader.dataset.update(data_root=str(root), img_suffix='.png')
    assert cfg.model.data_preprocessor.engine_dtype == 'float16'
    whats = [item.what for item in preflight.check(cfg, 'test')]        # no checkpoint
    assert len(whats) == 1 and 'torchvision://resnet50' in whats[0]
    cfg.load_from = str(tmp_path / 'iter_20000.pth')
    (item,) = preflight.check(cfg, 'test')
    assert item.what == f'checkpoint {cfg.load_from} not found'
    (tmp_path / 'iter_20000.pth').write_bytes(b'w')
    assert preflight.check(cfg, 'test') == []
    train = [item.what for item in preflight.check(cfg, 'train')]       # training still needs both
    assert any('torchvision://resnet50' in w for w in train) and \
        any(w.startswith('a CUDA device') for w in train)

    tool = load_tool('test')                   # as tools/test.py calls it: the CHECKPOINT argument
    monkeypatch.setattr(tool, 'build_runner', RecordingRunner)
    built = RecordingRunner.built = []
    tool.main([str(REPO / MAIN_CONFIG), cfg.load_from, '--work-dir', str(tmp_path / 'work'),
               '--cfg-options', f'test_dataloader.dataset.data_root={root}',
               'test_dataloader.dataset.img_suffix=.png'])
    assert len(built) == 1 and built[0].load_from == cfg.load_from


def test_the_tiny_sd_command_in_the_fix_runs(tmp_path, monkeypatch):
    """The smoke-run command of the missing-weights fix parses and names a folder of SD configs
    (it once lacked build_tiny_sd.py's positional argument)."""
    shared_path('sd_configs', 'stable-diffusion-2-1-base')
    monkeypatch.chdir(REPO)
    (item,) = preflight.check(Config(dict(model=dict(sd_model=str(tmp_path / 'none')))), 'test')
    command = re.search(r'python (tools/build_tiny_sd\.py [^;]*?)(?:;|\)|$)', item.fix).group(1)
    assert 'tiny-cpu configs' in item.fix and "2.1-base's head counts" in item.fix
    args = load_tool('build_tiny_sd').parse_args(command.split()[1:])
    assert (args.sd_config_dir / 'model_index.json').is_file()
    assert args.out.as_posix() == 'work_dirs/tiny-stable-diffusion-2-1-base'  # tiny-cpu configs'
    tiny = Config.fromfile(str(TINY_ONLINE_CONFIG))
    assert tiny.train_dataloader.dataset.pipeline[2].cache.model == args.out.as_posix()


def test_tiny_sd_from_a_folder_without_model_index_names_the_model_folders_in_it(tmp_path):
    """The usual slip: the folder of all the configs instead of one model's; nothing is
    written."""
    configs = shared_path('sd_configs')
    out = tmp_path / 'tiny'
    with pytest.raises(SystemExit) as stop:
        load_tool('build_tiny_sd').main([str(configs), '--out', str(out)])
    models = ', '.join(str(configs / name) for name in (
        'stable-diffusion-2-1-base', 'stable-diffusion-v1-4', 'stable-diffusion-v1-5'))
    assert str(stop.value) == (f'build_tiny_sd.py: {configs} has no model_index.json (expected '
                               'a diffusers folder of configs and tokenizer); the model folders '
                               f'in it: {models}')
    with pytest.raises(SystemExit, match=r'\(expected a diffusers folder of configs and '
                                         r'tokenizer\)$'):
        load_tool('build_tiny_sd').main([str(tmp_path), '--out', str(out)])
    assert not out.exists()


def test_the_smoke_run_hint_builds_the_configured_architecture(tmp_path, monkeypatch):
    """A config on SD 1.4 (the DiffSeg ones) is told to build a tiny SD 1.4 and where to point
    the setting at it; an id the workspace has no configs of gets the tiny-cpu configs' SD 2.1."""
    shared_path('sd_configs', 'stable-diffusion-v1-4')
    monkeypatch.chdir(REPO)
    cfg = Config(dict(model=dict(sd_model='CompVis/stable-diffusion-v1-4')))
    (item,) = preflight.check(cfg, 'test')
    command = re.search(r'python (tools/build_tiny_sd\.py [^,]*?),', item.fix).group(1)
    args = load_tool('build_tiny_sd').parse_args(command.split()[1:])
    assert args.sd_config_dir.name == 'stable-diffusion-v1-4'
    assert item.fix.endswith('then --cfg-options model.sd_model='
                             'work_dirs/tiny-stable-diffusion-v1-4)')
    assert 'iSeg' not in item.fix
    cfg.model.sd_model = 'someone/my-finetuned-sd'
    (item,) = preflight.check(cfg, 'test')
    assert 'tiny-cpu configs' in item.fix and 'tiny-stable-diffusion-2-1-base' in item.fix


def test_diffseg_evaluation_data_fixes_name_their_downloads(tmp_path, monkeypatch):
    """The DiffSeg evaluation configs' missing data comes with its download and layout."""
    monkeypatch.chdir(tmp_path)
    for name, url in (('cocostuff27', 'stuffthingmaps_trainval2017.zip'),
                      ('cityscapes27', 'gtFine_trainvaltest.zip')):
        cfg = Config.fromfile(str(REPO / 'configs/mask2former' /
                                  f'diffseg-sd14_{name}-unsupervised-512x512.py'))
        [data] = [m for m in preflight.check(cfg, 'test') if 'data root' in m.what]
        assert data.where == ['test_dataloader.dataset'] and url in data.fix
        assert ('curated/val2017' in data.fix) == (name == 'cocostuff27')
        assert 'converter' not in data.fix   # both read their label maps as shipped


def test_images_and_labels_the_split_lists_are_there(tmp_path):
    """A split file naming an image that is not there (or whose label map is not) is named
    before the run, which would otherwise stop with a traceback on reaching it."""
    root = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'voc')
    split = root / 'ImageSets/Segmentation/train.txt'
    split.write_text(split.read_text() + 'voc_val_999\n')
    (root / 'SegmentationClassAug/voc_val_1.png').unlink()
    (root / 'SegmentationClassAug/voc_val_1.png').mkdir()   # a folder of that name is no file
    cfg = Config.fromfile(str(REPO / 'configs/mask2former/iseg-sd21base_voc12-train-pseudo-masks.py'))
    cfg.test_dataloader.dataset.update(data_root=str(root), img_suffix='.png')
    missing = {m.what: m for m in preflight.check(cfg, 'test') if 'of the split' in m.what}
    images = (f'PascalVOCDataset: 1 of the 5 images of the split ({split}) are not there (e.g. '
              f"'{root}/JPEGImages/voc_val_999.png')")
    labels = (f'PascalVOCDataset: 2 of the 5 label maps of the split ({split}) are not there '
              f"(e.g. '{root}/SegmentationClassAug/voc_val_1.png', "
              f"'{root}/SegmentationClassAug/voc_val_999.png')")
    assert set(missing) == {images, labels}
    assert missing[images].where == ['test_dataloader.dataset']
    assert f'or remove their names from the split file {split}' in missing[images].fix
    assert 'voc_aug.py' in missing[labels].fix
    split.write_text(split.read_text().replace('voc_val_999\n', ''))
    (root / 'SegmentationClassAug/voc_val_1.png').rmdir()
    (root / 'SegmentationClassAug/voc_val_1.png').symlink_to(
        shared_path('voc2012_val_samples', 'SegmentationClass', 'voc_val_1.png'))
    assert not [m for m in preflight.check(cfg, 'test') if 'of the split' in m.what]


def test_misspelt_options_are_named_with_the_nearest_one(tmp_path):
    """``--cfg-options model.sd_modle=...`` (and the like for datasets and metrics) would stop
    the runner with a TypeError, or leave the real key unchanged: named before anything runs."""
    cfg = Config.fromfile(str(REPO / 'configs/mask2former/'
                              'diffseg-sd14_cityscapes27-unsupervised-512x512.py'))
    cfg.merge_from_dict({'model.sd_modle': str(tmp_path), 'model.foo': 1,
                         'test_dataloader.dataset.data_roto': 'x', 'test_evaluator.num_clases': 27})
    found = {m.where[0]: m for m in preflight.check(cfg, 'test') if m.where[0].count('.') >= 1}
    assert found['model.sd_modle'].what == \
        "model: DiffusionSegmentor has no option 'sd_modle' (did you mean 'sd_model'?)"
    assert found['model.sd_modle'].fix.startswith('set model.sd_model instead of model.sd_modle')
    assert 'remove model.foo (the options of DiffusionSegmentor: ' in found['model.foo'].fix
    assert "did you mean 'data_root'?" in found['test_dataloader.dataset.data_roto'].what
    assert "HungarianMatchedIoU has no option 'num_clases' (did you mean 'num_classes'?)" in \
        found['test_evaluator.num_clases'].what
    for config in ('iseg-sd21base_voc12-train-pseudo-masks.py',
                   'mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'):
        cfg = Config.fromfile(str(REPO / 'configs/mask2former' / config))
        assert preflight.check_options(cfg, ('model', 'train_dataloader', 'test_dataloader')) == []


def test_a_hub_revision_beside_a_label_cache_is_refused_with_the_folder_fix(tmp_path, tiny_sd):
    """``engine_kwargs.revision`` loads other weights under the same name, and the label cache
    (and its readers in the train pipeline) know the model by name and files: labels of one
    revision were served to a run on another. The pre-flight and the labeller refuse it,
    naming the download to a folder; 'main' is the default revision."""
    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.models.online_labeler import OnlineLabeler
    cfg = tiny_online_config(tmp_path, tiny_sd)
    cfg.model.data_preprocessor.engine_kwargs = dict(revision='main')
    assert preflight.check(cfg, 'train') == []
    cfg.model.data_preprocessor.engine_kwargs = dict(revision='v2')
    [item] = preflight.check(cfg, 'train')
    assert item.what.startswith("model.data_preprocessor.engine_kwargs.revision='v2' with the "
                                f'label cache {tmp_path}/cache')
    assert item.fix.startswith('download that revision to a folder (hf download MODEL '
                               '--revision v2 --local-dir FOLDER)')
    assert item.where == ['train_dataloader.dataset.pipeline.2.cache.model',
                          'model.data_preprocessor.engine_kwargs.revision']
    spec = cfg.train_dataloader.dataset.pipeline[2].cache
    with pytest.raises(UserInputError, match="revision='v2'.*hf download MODEL --revision v2"):
        OnlineLabeler(engine_kwargs=dict(revision='v2')).bind(spec.to_dict())
    assert not (tmp_path / 'cache').exists()
