"""Pre-flight: a config's class lists agree (mmdiffseg.preflight_classes). A custom dataset
changes its classes in the dataset, LoadImageLevelLabels, the label cache's generator, the
head's num_classes and its class_weight; each one left behind is named with its key."""
import json

import numpy as np
import pytest
from e2e_helpers import REPO
from mmengine.config import Config
from user_docs import user_docs_text

import mmdiffseg  # noqa: F401
from mmdiffseg import preflight
from mmdiffseg.datasets.class_names import DATASET_CLASSES
from mmdiffseg.preflight_classes import (_first_difference, check_dataset_classes,
                                         check_matched_class_count, check_model_classes,
                                         check_segment_scoring, describe)
from mmdiffseg.preflight_label_files import check_label_convention

TINY_ONLINE = REPO / 'configs/mask2former/mask2former_tiny-cpu_voc12-iseg-online-128x128.py'
MINE = ['background', 'person', 'horse', 'cat', 'couch', 'sheep']
STEPS = 'train_dataloader.dataset.pipeline'
CLASS_KEYS = ('classes', 'num_classes', 'class_weight', 'generator', 'data_preprocessor',
              'use_image_labels', 'engine_kwargs')


@pytest.fixture(autouse=True)
def no_network_probes(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    preflight.reachable.cache_clear()


def class_problems(options):
    cfg = Config.fromfile(str(TINY_ONLINE))
    for section in ('train_dataloader', 'val_dataloader'):
        cfg.merge_from_dict({f'{section}.dataset.metainfo': dict(classes=MINE)})
    cfg.merge_from_dict(options)
    return {w: m for m in preflight.check(cfg, 'train') for w in m.where
            if any(k in w for k in CLASS_KEYS)}


def test_each_class_list_left_behind_is_named_with_its_key_and_fix():
    found = class_problems({})
    assert sorted(found) == ['model.decode_head.num_classes', f'{STEPS}.1.classes',
                             f'{STEPS}.2.cache.generator']
    step = found[f'{STEPS}.1.classes']
    assert step.what.startswith(f"{STEPS}.1.classes (the class each image-level name or "
                                "ground-truth value stands for) has the classes 'voc' (21 "
                                "classes), but the dataset reads its labels as ['background', "
                                "'person', 'horse', 'cat', 'couch', 'sheep'] (6 classes) "
                                "(train_dataloader.dataset.metainfo); index 1 is 'aeroplane'")
    assert step.fix == f"set {STEPS}.1.classes to the dataset's classes, in their order"
    assert 'vocabulary=None' in found[f'{STEPS}.2.cache.generator'].fix
    head = found['model.decode_head.num_classes']
    assert head.what.startswith('model.decode_head.num_classes is 21, but train_dataloader.dataset')
    assert head.fix.startswith('--cfg-options model.decode_head.num_classes=6')

    generator = dict(type='ISeg', classes=MINE, vocabulary=None, cross_heads=None, self_heads=[0])
    agreed = {f'{STEPS}.1.classes': MINE, f'{STEPS}.2.cache.generator': generator,
              'model.decode_head.num_classes': 6}
    found = class_problems(agreed)
    assert list(found) == ['model.decode_head.loss_cls.class_weight']  # 22 weights left
    assert found['model.decode_head.loss_cls.class_weight'].fix == (
        'set model.decode_head.loss_cls.class_weight to 7 weights, a weight per class, then the '
        'no-object one (in the config: [1.0] * 6 + [0.1])')
    assert class_problems({**agreed, 'model.decode_head.loss_cls.class_weight': [1.0] * 6 + [0.1]}
                          ) == {}

    shuffled = dict(generator, classes=sorted(MINE))  # same names, other indices
    found = class_problems({**agreed, f'{STEPS}.2.cache.generator': shuffled,
                            'model.decode_head.loss_cls.class_weight': [1.0] * 7})
    assert list(found) == [f'{STEPS}.2.cache.generator']
    assert "index 1 is 'cat' there but 'person' in the dataset" in \
        found[f'{STEPS}.2.cache.generator'].what


def test_a_validation_set_of_other_classes_is_named_not_the_head():
    """The README's own-classes recipe with val_dataloader left on VOC: the val dataset is named
    with the training classes as the fix (the head's num_classes was said to need 21)."""
    cfg = Config.fromfile(str(TINY_ONLINE))
    cfg.merge_from_dict({'train_dataloader.dataset.metainfo': dict(classes=MINE),
                         'model.decode_head.num_classes': 6})
    found = {w: m for m in preflight.check(cfg, 'train') for w in m.where}
    assert 'model.decode_head.num_classes' not in found
    item = found['val_dataloader.dataset.metainfo']
    assert item.what.startswith("val_dataloader.dataset has the classes 'voc' (21 classes), but "
                                'train_dataloader.dataset, which the model learns, has '
                                "['background', 'person', 'horse', 'cat', 'couch', 'sheep']")
    assert item.fix == ('give val_dataloader.dataset the classes of train_dataloader.dataset, '
                        'in their order (val_dataloader.dataset.metainfo=dict(classes=[...]))')


@pytest.mark.parametrize('head', ['MaskFormerHead', 'Mask2FormerHead'])
def test_mask_classification_heads_weigh_the_no_object_class_too(head):
    """MaskFormer's and Mask2Former's ``loss_cls`` weighs ``num_classes + 1`` classes."""
    dataset = [('d', dict(metainfo=dict(classes=['a', 'b', 'c'])))]

    def model(weights):
        return dict(decode_head=dict(type=head, num_classes=3,
                                     loss_cls=dict(type='CrossEntropyLoss', class_weight=weights)))
    [weights] = check_model_classes(model([1.0] * 3), dataset)
    assert weights.where == ['model.decode_head.loss_cls.class_weight']
    assert weights.fix.endswith('then the no-object one (in the config: [1.0] * 3 + [0.1])')
    assert check_model_classes(model([1.0] * 3 + [0.1]), dataset) == []


@pytest.mark.parametrize('batch', [0, -1, 2.5, True])
def test_a_training_free_segmentors_batch_and_dtype_are_checked_before_the_run(batch):
    """DiffusionSegmentor's batch_size 0 stopped the test run at its first batch ('range() arg 3
    must not be zero'), -1 in the metric (KeyError 'pred_sem_seg'): named by the pre-flight, and
    refused by the labeller as the runner builds it."""
    from mmdiffseg.models.online_labeler import AttentionLabeler
    from mmdiffseg.preflight_classes import check_model_classes
    model = dict(type='DiffusionSegmentor', batch_size=batch, engine_dtype='fp32')
    found = {m.where[0]: m for m in check_model_classes(model, [])}
    assert found['model.batch_size'].what == f'model.batch_size is {batch!r}'
    assert found['model.batch_size'].fix.endswith('(--cfg-options model.batch_size=4)')
    assert found['model.engine_dtype'].fix.endswith('(--cfg-options model.engine_dtype=float16)')
    with pytest.raises(ValueError, match=r'AttentionLabeler: batch_size .* at least 1, got '):
        AttentionLabeler('some/model', dict(type='DiffSeg'), batch_size=batch)


def test_a_dataset_spelling_background_with_a_capital_takes_the_generators_background():
    """mmseg's LIPDataset names class 0 'Background', which a generator refuses (it would be
    prompted as an object): the generator's 'background' matches it, so LIP runs at all."""
    from mmseg.datasets import LIPDataset
    lip = list(LIPDataset.METAINFO['classes'])
    assert lip[0] == 'Background'
    generator = dict(type='ISeg', classes=['background', *lip[1:]], vocabulary=None,
                     cross_heads=None, self_heads=None)
    dataset = dict(type='LIPDataset', pipeline=[dict(type='LoadPseudoLabel', cache=dict(
        cache_dir='c', model='m', generator=generator))])
    assert check_dataset_classes(dataset, 'train_dataloader.dataset') == []
    generator['classes'] = ['background', *lip[2:]]
    (item,) = check_dataset_classes(dataset, 'train_dataloader.dataset')
    assert f"index 1 is {lip[2]!r} there but {lip[1]!r} in the dataset" in item.what


def test_a_prefill_checks_the_preprocessors_labeller_options(tmp_path):
    """prefill_labels.py reads label_batch_size and engine_dtype of the preprocessor: 0 and
    'half' ended in a traceback (its check read only the training data); --dtype replaces
    engine_dtype."""
    cfg = Config(dict(model=dict(data_preprocessor=dict(
        type='DiffusionLabelPreprocessor', label_batch_size=0, engine_dtype='half'))))
    found = {m.where[0] for m in preflight.check(cfg, 'prefill')}
    assert {'model.data_preprocessor.label_batch_size',
            'model.data_preprocessor.engine_dtype'} <= found
    found = {m.where[0] for m in preflight.check(cfg, 'prefill', dtype='float32')}
    assert 'model.data_preprocessor.engine_dtype' not in found


def test_what_makes_online_labels_and_what_reads_them_is_checked():
    """A stock SegDataPreProcessor under an online pipeline (every target 255, the loss 0),
    unlabelled DiffSeg segments as online labels, an FCN-style loss_decode class_weight, and
    DiffusionSegmentor's iSeg without image-level labels: each named before any work."""
    found = class_problems({'model.data_preprocessor.type': 'SegDataPreProcessor'})
    assert found['model.data_preprocessor'].what.startswith(
        "train_dataloader.dataset.pipeline.2 (LoadPseudoLabel) asks for online labels, but "
        "model.data_preprocessor is 'SegDataPreProcessor'")
    online = dict(pipeline=[dict(type='LoadPseudoLabel'), dict(type='LoadPseudoLabel')])
    stock = dict(data_preprocessor=dict(type='SegDataPreProcessor'))
    assert len(check_model_classes(stock, [('a', online), ('b', online)])) == 1   # said once
    found = class_problems({'model.data_preprocessor.engine_dtype': 'float64',
                            'model.data_preprocessor.label_batch_size': 0})
    assert found['model.data_preprocessor.engine_dtype'].fix.startswith(
        "one of ['bfloat16', 'float16', 'float32']")
    assert found['model.data_preprocessor.label_batch_size'].what.endswith('is 0')
    found = class_problems({'model.data_preprocessor.engine_dtype': ''})   # not "the default"
    assert found['model.data_preprocessor.engine_dtype'].what.endswith("is ''")
    found = class_problems({'model.data_preprocessor.engine_kwargs': dict(compile_unet='Ture')})
    assert found['model.data_preprocessor.engine_kwargs'].what.startswith(
        'model.data_preprocessor.engine_kwargs: compile_unet must be True, False or a dict')
    found = class_problems({f'{STEPS}.2.cache.generator': dict(_delete_=True, type='DiffSeg')})
    assert 'makes unlabelled segment ids' in found[f'{STEPS}.2.cache.generator'].what
    cfg = {'model': dict(decode_head=dict(type='FCNHead', num_classes=3, loss_decode=[
        dict(type='CrossEntropyLoss', class_weight=[1.0] * 3),
        dict(type='DiceLoss', class_weight=[1.0] * 4)]))}
    dataset = dict(metainfo=dict(classes=['a', 'b', 'c']))
    [weights] = check_model_classes(cfg['model'], [('d', dataset)])
    assert weights.where == ['model.decode_head.loss_decode.1.class_weight']
    assert weights.fix.endswith('to 3 weights, a weight per class (in the config: [1.0] * 3)')
    segmentor = dict(type='DiffusionSegmentor', generator=dict(type='ISeg', preset='wsss_voc'))
    [labels] = check_model_classes(segmentor, [('t', dict(type='PascalVOCDataset'))])
    assert labels.where == ['model.use_image_labels']
    assert check_model_classes(dict(segmentor, use_image_labels=True),
                               [('t', dict(type='PascalVOCDataset'))]) == []
    [options] = check_model_classes(dict(segmentor, use_image_labels=True,
                                         engine_kwargs=dict(chunk_byte=2 ** 20)), [])
    assert options.what == ("model.engine_kwargs: unknown engine option 'chunk_byte': did you "
                            "mean 'chunk_bytes'? (engine options: chunk_bytes, map_backend, "
                            "compile_unet; others go to diffusers' "
                            "StableDiffusionPipeline.from_pretrained)")


def test_unlabelled_segments_scored_as_class_indices_are_named():
    """DiffSeg's segment ids under IoUMetric: segment k is not class k; the shipped
    unsupervised config (HungarianMatchedIoU) passes, and so does DiffSeg naming classes."""
    cfg = Config.fromfile(str(REPO / 'configs/mask2former/'
                              'diffseg-sd14_cityscapes27-unsupervised-512x512.py'))
    model = cfg.model.to_dict()
    assert check_segment_scoring(model, [('test_evaluator', cfg.test_evaluator)]) == []
    cfg.merge_from_dict({'test_evaluator': dict(_delete_=True, type='IoUMetric')})
    [found] = check_segment_scoring(model, [('test_evaluator', cfg.test_evaluator)])
    assert found.where == ['test_evaluator']
    assert found.what.startswith('test_evaluator is IoUMetric, which scores class indices')
    assert "test_evaluator=dict(type='HungarianMatchedIoU'" in found.fix
    for kind in ('PseudoLabelMetric', 'CityscapesMetric'):   # the other class-index metrics
        [found] = check_segment_scoring(model, [('test_evaluator', dict(type=kind))])
        assert found.what.startswith(f'test_evaluator is {kind}, which scores class indices')
    listed = [dict(type='mmseg.IoUMetric'), dict(type='HungarianMatchedIoU', num_classes=27)]
    [found] = check_segment_scoring(model, [('val_evaluator', listed)])
    assert found.where == ['val_evaluator.0']
    named = dict(model, generator=dict(type='DiffSeg', classes=['road', 'car']))
    assert check_segment_scoring(named, [('test_evaluator', cfg.test_evaluator)]) == []
    misspelt = dict(model, generator=dict(type='DiffSeg', kl_threshol=1.1))   # named elsewhere
    assert check_segment_scoring(misspelt, [('test_evaluator', cfg.test_evaluator)]) == []
    found = {w for m in preflight.check(cfg, 'test') for w in m.where}
    assert 'test_evaluator' in found


def test_a_matched_class_count_other_than_the_datasets_is_named_before_the_run():
    """HungarianMatchedIoU refuses a num_classes its dataset's class count differs from, but
    only once the evaluation ran: the pre-flight names it with the count to set, per entry of
    an evaluator list, against the dataset of the same loader."""
    cfg = Config.fromfile(str(REPO / 'configs/mask2former/'
                              'diffseg-sd14_cityscapes27-unsupervised-512x512.py'))
    assert not any('num_classes' in w for m in preflight.check(cfg, 'test') for w in m.where)
    cfg.merge_from_dict({'test_evaluator.num_classes': 19})
    [found] = [m for m in preflight.check(cfg, 'test') if 'test_evaluator.num_classes' in m.where]
    assert found.what == ("test_evaluator.num_classes is 19, but test_dataloader's dataset has "
                          "'cityscapes27' (27 classes): the scores would be taken over another "
                          'class count')
    assert found.fix.startswith('--cfg-options test_evaluator.num_classes=27')
    three = [('train_dataloader.dataset', dict(metainfo=dict(classes=['a', 'b']))),
             ('val_dataloader.dataset.datasets.0', dict(metainfo=dict(classes=['a', 'b', 'c'])))]
    listed = [dict(type='IoUMetric'), dict(type='HungarianMatchedIoU', num_classes=2),
              dict(type='HungarianMatchedIoU'), dict(type='HungarianMatchedIoU', num_classes=3)]
    [found] = check_matched_class_count([('val_evaluator', listed)], three)
    assert found.where == ['val_evaluator.1.num_classes']


@pytest.mark.parametrize('config', sorted(p.name for p in (REPO / 'configs').rglob('*.py')
                                          if '_base_' not in p.parts))
def test_every_shipped_config_agrees_with_itself(config):
    """No shipped config has a class list that disagrees (ADE20K's 'bed ' included), nor a
    pipeline forcing the other zero-label convention."""
    [path] = (REPO / 'configs').rglob(config)
    cfg = Config.fromfile(str(path)).to_dict()
    datasets, missing = [], []
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for where, node in preflight.walk(cfg.get(name) or {}, name):
            if 'pipeline' in node:
                missing += check_dataset_classes(node, where)
                missing += check_label_convention(node, where)
                datasets.append((where, node))
    if isinstance(cfg.get('model'), dict):
        missing += check_model_classes(cfg['model'], datasets)
        missing += check_segment_scoring(cfg['model'], [
            (key, cfg[key]) for key in ('val_evaluator', 'test_evaluator') if cfg.get(key)])
    assert missing == []


def test_the_readme_custom_dataset_config_trains_on_the_tools_labels(tmp_path, monkeypatch):
    """docs/mmseg.md "Your own images and classes": pseudo_label.py with a class list VOC lacks
    ('couch'), then the docs' config: its dataset reads the labels as written, and pre-flight
    finds no class list that disagrees once val/test get the classes as its comment says."""
    from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
    from mmseg.registry import DATASETS
    from PIL import Image
    from sample_data import shared_path
    from test_offline_tools import ISEG_OPTIONS, run_in_process

    docs = user_docs_text().split('**Your own images and classes.**')[1]
    snippet = docs.split('```python\n')[1].split('```')[0]
    classes = ['background', 'person', 'horse', 'couch']
    assert f'classes = {classes}' in snippet
    monkeypatch.chdir(tmp_path)
    images = tmp_path / 'data/mine/images'
    images.mkdir(parents=True)
    voc = shared_path('voc2012_val_samples', 'JPEGImages')
    for name in ('voc_val_0', 'voc_val_20'):
        Image.open(voc / f'{name}.png').convert('RGB').save(images / f'{name}.jpg')
    (tmp_path / 'data/mine/image_labels.json').write_text(
        json.dumps({'voc_val_0': ['person'], 'voc_val_20': ['horse', 'couch']}))
    model = cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    run_in_process('pseudo_label', 'data/mine/images', '--labels', 'data/mine/image_labels.json',
                   '--classes', ','.join(classes), '--out', 'data/mine/pseudo_labels', '--model',
                   model, '--device', 'cpu', *ISEG_OPTIONS)

    config = tmp_path / 'mine.py'
    config.write_text(snippet.replace("'./mask2former", f"'{REPO}/configs/mask2former/mask2former"))
    cfg = Config.fromfile(str(config))
    for name in ('val_dataloader', 'test_dataloader'):
        cfg.merge_from_dict({f'{name}.dataset.type': 'BaseSegDataset',
                             f'{name}.dataset.metainfo': dict(classes=classes)})
    found = [m for m in preflight.check(cfg, 'train')
             if any(k in w for w in m.where for k in CLASS_KEYS)]
    assert found == []
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='mmseg.LoadAnnotations')]))
    assert list(dataset.metainfo['classes']) == classes and len(dataset) == 2
    for index, name in enumerate(('voc_val_0', 'voc_val_20')):
        written = np.array(Image.open(f'data/mine/pseudo_labels/SegmentationClass/{name}.png'))
        assert np.array_equal(dataset[index]['gt_seg_map'], written)
    assert set(np.unique(dataset[1]['gt_seg_map'])) <= {0, 2, 3, 255}


def test_class_lists_are_shown_whole_up_to_eight_names_and_compared_without_spaces():
    """Eight names are shown whole, nine by their first six; the first difference names both
    lists' entries in order, and surrounding spaces (ADE20K's ``'bed '``) are no difference."""
    eight = [f'c{i}' for i in range(8)]
    assert describe(eight) == f'{eight} (8 classes)'
    assert describe(eight + ['c8']) == f"{eight[:6] + ['...']} (9 classes)"
    assert _first_difference(['a', 'b '], ['a', 'c']) == \
        "; index 1 is 'b ' there but 'c' in the dataset"
    assert _first_difference(['bed ', 'x'], ['bed', 'x']) == ''
    stripped = [name.strip() for name in DATASET_CLASSES['ade20k']]    # 'bed ' written 'bed'
    assert describe(stripped) == "'ade20k' (150 classes)"
    ade = dict(type='ADE20KDataset', pipeline=[dict(type='LoadImageLevelLabels', classes=stripped)])
    assert check_dataset_classes(ade, 'd') == []


def test_an_empty_class_list_is_a_list_that_disagrees_not_an_absent_one():
    voc = dict(type='PascalVOCDataset', pipeline=[dict(type='LoadImageLevelLabels', classes=[])])
    [found] = check_dataset_classes(voc, 'd')
    assert found.where == ['d.pipeline.0.classes']
    assert found.what.startswith('d.pipeline.0.classes (the class each image-level name or '
                                 "ground-truth value stands for) has the classes [] (0 classes)")


def test_auxiliary_heads_are_checked_by_their_index():
    """mmseg's ``auxiliary_head`` (one head, or a list of them) predicts the classes too."""
    three = [('d', dict(metainfo=dict(classes=['a', 'b', 'c'])))]
    model = dict(decode_head=dict(type='FCNHead', num_classes=3),
                 auxiliary_head=[dict(type='FCNHead', num_classes=3),
                                 dict(type='FCNHead', num_classes=2)])   # one short
    [found] = check_model_classes(model, three)
    assert found.where == ['model.auxiliary_head.1.num_classes']
    model['auxiliary_head'][1]['num_classes'] = 4
    [found] = check_model_classes(dict(model, auxiliary_head=model['auxiliary_head'][1]), three)
    assert found.where == ['model.auxiliary_head.num_classes']


def test_an_empty_dataset_class_list_is_named_not_read_as_the_default():
    """``metainfo=dict(classes=[])``: mmseg maps every label to 255 (not the class's own list)."""
    from mmseg.datasets import PascalVOCDataset
    assert set(PascalVOCDataset.get_label_map([]).values()) == {255}
    voc = dict(type='PascalVOCDataset', metainfo=dict(classes=[]),
               pipeline=[dict(type='LoadImageLevelLabels', classes='voc')])
    [found] = check_dataset_classes(voc, 'd')
    assert found.where == ['d.metainfo'] and 'every label value to 255' in found.what
    assert found.fix.endswith('or remove d.metainfo to read them as PascalVOCDataset does')


def test_only_the_known_class_lists_of_a_dataset_and_its_pipeline_are_compared():
    """A dataset whose classes are unknown (an unregistered type, no metainfo) has nothing to
    compare with; a pipeline step that is no dict, and a step naming an unknown class set (the
    transform refuses it when built), are passed over; the step after them is still checked."""
    step = dict(type='LoadImageLevelLabels', classes=['b', 'a'])
    assert check_dataset_classes(dict(type='NoSuchDataset', pipeline=[step]), 'd') == []
    dataset = dict(type='NoSuchDataset', metainfo=dict(classes=['a', 'b']), pipeline=[
        print, dict(type='LoadImageLevelLabels', classes='nosuch'), step])
    (item,) = check_dataset_classes(dataset, 'd')
    assert item.where == ['d.pipeline.2.classes']
    assert "index 0 is 'b' there but 'a' in the dataset" in item.what


def test_a_segmentors_generator_of_other_classes_than_the_dataset_is_named():
    """``DiffusionSegmentor``'s generator indexing VOC's 21 classes on a dataset of two: each
    label index would mean another class."""
    segmentor = dict(type='DiffusionSegmentor', use_image_labels=True,
                     generator=dict(type='ISeg', preset='wsss_voc'))
    dataset = dict(metainfo=dict(classes=['background', 'person']))
    (item,) = check_model_classes(segmentor, [('t', dataset)])
    assert item.where == ['model.generator']
    assert item.what.startswith("model.generator (the classes its labels index) has the classes "
                                "'voc' (21 classes), but the dataset reads its labels as "
                                "['background', 'person'] (2 classes) (t); index 1 is "
                                "'aeroplane' there but 'person' in the dataset")
    assert item.fix == ("give the generator the dataset's classes, in their order "
                        '(model.generator.classes=[...])')
    dataset['metainfo']['classes'] = DATASET_CLASSES['voc']
    assert check_model_classes(segmentor, [('t', dataset)]) == []
