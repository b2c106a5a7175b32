"""The ``--cfg-options`` the configs' comments give reach the entry they mean, and a key
nothing would read is refused (mmengine adds it beside the config: ``pipeline[2].ann_file`` ran
the config unchanged)."""
import re
from pathlib import Path

import pytest
from mmengine.config import Config

import mmdiffseg  # noqa: F401
from mmdiffseg.apis.cfg_options import merge_cfg_options
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.compat import config_fromfile

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
FULL = sorted(p for p in CONFIGS.rglob('*.py') if '_base_' not in p.parts)


def commented_options():
    """``(config, key, value)`` of each ``--cfg-options key=value`` in a config's comments; one
    in a ``_base_`` file is checked on the first config that inherits it."""
    found = []
    for path in sorted(CONFIGS.rglob('*.py')):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith('#') and '--cfg-options' in line:
                pairs = line.split('--cfg-options', 1)[1].split()
                users = [path] if path in FULL else \
                    [c for c in FULL if f'{path.parent.name}/{path.name}' in c.read_text()]
                assert users, f'{path}: no config inherits it'
                found += [(users[0], *pair.rstrip('.').split('=', 1))
                          for pair in pairs if '=' in pair]
    return found


def entry(node, key: str):
    for part in key.split('.'):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@pytest.mark.parametrize('config, key, value', commented_options(),
                         ids=lambda x: x.name if isinstance(x, Path) else str(x)[:40])
def test_each_commented_option_changes_an_entry_the_config_has(config, key, value):
    cfg = config_fromfile(str(config))
    entry(cfg.to_dict(), key.rsplit('.', 1)[0])          # the entry it changes is there
    merge_cfg_options(cfg, {key: value})
    assert entry(cfg.to_dict(), key) == value


def test_the_pseudo_mask_configs_labels_option_reaches_its_label_step():
    """The iSeg pseudo-mask config's comment: the XML object lists instead of the ground truth's
    classes, on the test pipeline's LoadImageLevelLabels."""
    options = [o for o in commented_options() if o[1].endswith('.ann_file')]
    assert options and all(o[0].name == 'iseg-sd21base_voc12-train-pseudo-masks.py' for o in options)
    cfg = config_fromfile(str(options[0][0]))
    merge_cfg_options(cfg, {options[0][1]: options[0][2]})
    step = cfg.test_dataloader.dataset.pipeline[2]
    assert step.type == 'LoadImageLevelLabels' and step.ann_file.endswith('image_labels.json')


@pytest.mark.parametrize('key, meant', [
    ('pipeline[2].ann_file', 'val_dataloader.dataset.pipeline.2.ann_file or '
                             'test_dataloader.dataset.pipeline.2.ann_file'),
    ('modle.data_preprocessor.batch_size', 'model.data_preprocessor.batch_size'),
    ('test_dataloder.batch_size', 'test_dataloader.batch_size')])
def test_a_key_nothing_would_read_is_refused_with_the_entry_meant(key, meant):
    cfg = config_fromfile(str(CONFIGS / 'mask2former/iseg-sd21base_voc12-train-pseudo-masks.py'))
    with pytest.raises(UserInputError, match=re.escape(
            f"--cfg-options {key}: the config has no entry {key.split('.')[0]!r} (mmengine would "
            f'add it, and nothing reads it); did you mean {meant}?')):
        merge_cfg_options(cfg, {key: 1})
    before = cfg.to_dict()
    merge_cfg_options(cfg, {'randomness.seed': 3, 'my_hook_setting': 1})  # the runner's; new
    assert cfg.randomness.seed == 3 and cfg.my_hook_setting == 1
    assert set(cfg.to_dict()) - set(before) == {'randomness', 'my_hook_setting'}


def test_the_entry_meant_is_one_the_runner_reads_however_deep():
    """``cache.model`` on an online config: the label cache's model is 6 levels down; the
    config's own variables ending in it (``train_pipeline.2.cache.model``) were read when it
    loaded, so changing them changes nothing: not offered."""
    cfg = config_fromfile(str(CONFIGS / 'mask2former/mask2former_tiny-cpu_voc12-iseg-online-'
                                        '128x128.py'))
    with pytest.raises(UserInputError, match=re.escape(
            'did you mean train_dataloader.dataset.pipeline.2.cache.model?')):
        merge_cfg_options(cfg, {'cache.model': 'x'})


def test_a_variable_read_at_load_is_refused_naming_the_entries_that_took_it():
    """``crop_size=...`` merged into the config's variable and the run cropped as before: the
    variable was read when the config loaded. The entries holding its name or value are named;
    a variable no entry took (one a custom hook may read) is merged."""
    cfg = config_fromfile(str(CONFIGS / 'mask2former/mask2former_tiny-cpu_voc12-iseg-online-'
                                        '128x128.py'))
    with pytest.raises(UserInputError, match=re.escape(
            "--cfg-options crop_size: 'crop_size' is a variable of the config, read when it "
            'loaded (changing it now changes nothing); set each entry that took it: '
            'train_dataloader.dataset.pipeline.4.crop_size, model.data_preprocessor.size')):
        merge_cfg_options(cfg, {'crop_size': (64, 64)})
    with pytest.raises(UserInputError, match=re.escape(
            'set the entry that took it: train_dataloader.dataset.pipeline.2.cache.model')):
        merge_cfg_options(cfg, {'train_pipeline[2].cache.model': 'x'})
    assert cfg.crop_size == cfg.model.data_preprocessor.size == (128, 128)
    untaken = dict(cfg.label_cache)  # the base config's cache; the tiny one overrides it
    assert untaken != cfg.train_dataloader.dataset.pipeline[2].cache
    merge_cfg_options(cfg, {'label_cache.model': 'x'})
    assert cfg.label_cache.model == 'x'


def test_an_entry_of_the_variables_name_holding_another_value_did_not_take_it():
    """Cityscapes' ``crop_size`` (512, 1024) beside a (512, 512) crop step and model input: no
    entry took it, so the same-named entries are suggested, not named as having taken it; the
    top-level ``data_preprocessor`` is read only where the model has none (mmengine), so a
    change to it names the model's."""
    cfg = config_fromfile(str(CONFIGS / 'mask2former/mask2former_r50_8xb2-90k_cityscapes-'
                                        'seediff-synthetic-512x512.py'))
    assert cfg.crop_size != cfg.train_dataloader.dataset.pipeline[3].crop_size
    with pytest.raises(UserInputError) as refused:
        merge_cfg_options(cfg, {'crop_size': (256, 256)})
    assert str(refused.value) == (
        "--cfg-options crop_size: 'crop_size' is a variable of the config, read when it loaded, "
        'that no entry of the run took; did you mean '
        'train_dataloader.dataset.pipeline.3.crop_size?')
    with pytest.raises(UserInputError, match=re.escape(  # training reads synthetic images
            'set each entry that took it: val_dataloader.dataset.data_root, '
            'test_dataloader.dataset.data_root')):
        merge_cfg_options(cfg, {'data_root': 'x'})
    with pytest.raises(UserInputError, match=re.escape(
            'did you mean model.data_preprocessor.size?')):
        merge_cfg_options(cfg, {'data_preprocessor.size': (256, 256)})
    assert cfg.crop_size == (512, 1024) and cfg.data_preprocessor.size == (512, 1024)
    with pytest.raises(UserInputError) as refused:  # a list variable no entry took, by [index]
        merge_cfg_options(Config(dict(extra_steps=[dict(a=1)])), {'extra_steps[0].a': 2})
    assert str(refused.value) == (
        "--cfg-options extra_steps[0].a: the config has no entry 'extra_steps[0]' (mmengine "
        'would add it, and nothing reads it); did you mean extra_steps.0.a? (a list item is '
        'LIST.INDEX, not LIST[INDEX])')


def test_list_item_syntax_is_refused_for_a_name_the_config_lacks_and_types_must_match():
    """LIST[INDEX] of a name nowhere in the config was added as a literal key nothing reads;
    an entry holding 1.0 did not take a variable of 1 (nor True), so it is suggested, not
    named as the entry to set."""
    with pytest.raises(UserInputError) as refused:
        merge_cfg_options(Config(dict(model=dict(type='X'))), {'custom_steps[0].a': 1})
    assert str(refused.value) == (
        "--cfg-options custom_steps[0].a: the config has no entry 'custom_steps[0]' (mmengine "
        'would add it, and nothing reads it) (a list item is LIST.INDEX, not LIST[INDEX])')
    for value in (1.0, True):
        cfg = Config(dict(lr=1, optim_wrapper=dict(optimizer=dict(type='SGD', lr=value))))
        with pytest.raises(UserInputError) as refused:
            merge_cfg_options(cfg, {'lr': 2})
        assert str(refused.value) == (
            "--cfg-options lr: 'lr' is a variable of the config, read when it loaded, that no "
            'entry of the run took; did you mean optim_wrapper.optimizer.lr?')
