"""pseudo_label's --dataset-config through dataset wrappers (ConcatDataset, RepeatDataset, as
mmseg's pascal_voc12_aug config): the inner datasets' images, in order (no model needed)."""
import pytest

from mmdiffseg.apis.io import UserInputError
from mmdiffseg.apis.image_inputs import images_from_dataset_config, inner_dataset_cfgs

VOC = ("dict(type='PascalVOCDataset', data_root=%r, img_suffix='.png', ann_file=%r, "
       "data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'), pipeline=[])")


@pytest.fixture
def write_config(tmp_path, shared_data):
    """A config whose train dataset is ``wrapper`` of VOC sample datasets, one per split file
    (``{0}``, ``{1}``... in ``wrapper``)."""
    root = str(shared_data('voc2012_val_samples'))

    def write(wrapper, *splits):
        datasets = []
        for i, ids in enumerate(splits):
            (tmp_path / f'split{i}.txt').write_text(''.join(f'{x}\n' for x in ids))
            datasets.append(VOC % (root, str(tmp_path / f'split{i}.txt')))
        config = tmp_path / 'data.py'
        config.write_text(f'train_dataloader = dict(dataset={wrapper.format(*datasets)})\n')
        return str(config)
    return write


def test_wrappers_open_to_their_datasets_in_order():
    plain = dict(type='PascalVOCDataset')
    cfg = dict(type='ConcatDataset', datasets=[
        dict(type='RepeatDataset', times=3, dataset=plain), dict(plain, ann_file='b')])
    assert inner_dataset_cfgs(cfg, 'd') == [('d.datasets.0.dataset', plain),
                                            ('d.datasets.1', dict(plain, ann_file='b'))]
    assert inner_dataset_cfgs(plain, 'd') == [('d', plain)]


def test_a_concat_of_a_repeat_lists_every_inner_image_once_in_order(write_config):
    config = write_config("dict(type='ConcatDataset', datasets=[dict(type='RepeatDataset', "
                          "times=2, dataset={0}), {1}])", ['voc_val_20', 'voc_val_0'],
                          ['voc_val_1'])
    items, classes, gt_format = images_from_dataset_config(config, 'train')
    assert [it.id for it in items] == ['voc_val_20', 'voc_val_0', 'voc_val_1']
    assert items[2].payload['gt'].endswith('SegmentationClass/voc_val_1.png')
    assert classes[0] == 'background' and classes[20] == 'tvmonitor'
    assert gt_format.seg_map_suffix == '.png' and not gt_format.reduce_zero_label


def test_repeat_dataset_lists_its_dataset_once(write_config):
    config = write_config("dict(type='RepeatDataset', times=4, dataset={0})", ['voc_val_0'])
    assert [it.id for it in images_from_dataset_config(config, 'train')[0]] == ['voc_val_0']


def test_inner_datasets_sharing_an_image_or_of_other_classes_are_refused(write_config):
    """One id in two inner datasets is refused as two inputs of one id are (before the
    ground truth is read); so are datasets whose classes differ, and a wrapper of none."""
    config = write_config("dict(type='ConcatDataset', datasets=[])")
    with pytest.raises(UserInputError, match=r'^the train dataset of .* wraps no dataset '
                                             r'\(datasets=\[\]\): list the datasets'):
        images_from_dataset_config(config, 'train')
    concat = "dict(type='ConcatDataset', datasets=[{0}, {1}])"
    config = write_config(concat, ['voc_val_0', 'voc_val_1'], ['voc_val_1'])
    with pytest.raises(UserInputError, match="two inputs have the id 'voc_val_1'"):
        images_from_dataset_config(config, 'train')
    config = write_config(concat.replace('{1}', "dict({1}, metainfo=dict(classes=('background', "
                                         "'cat')))"), ['voc_val_0'], ['voc_val_1'])
    with pytest.raises(UserInputError, match=r'^the train datasets of .* differ in their classes: '
                                             r'train_dataloader.dataset.datasets.0 has '
                                             r"\['background', 'aeroplane', .*\], "
                                             r"train_dataloader.dataset.datasets.1 \['background', "
                                             r"'cat'\]; label them one at a time"):
        images_from_dataset_config(config, 'train')


def test_the_listing_functions_import_from_their_documented_former_module():
    """Scripts written to the docs before the listing moved to apis/image_inputs.py import it
    from apis/pseudo_label.py (ImportError after the move)."""
    import importlib

    from mmdiffseg.apis import image_inputs
    former = importlib.import_module('mmdiffseg.apis.pseudo_label')
    for name in ('images_from_dataset_config', 'images_from_folder', 'image_items',
                 'inner_dataset_cfgs', 'path_items'):
        assert getattr(former, name) is getattr(image_inputs, name)


def test_inner_datasets_of_other_label_formats_are_refused(write_config):
    """A ConcatDataset of VOC and VOC with reduce_zero_label: one dataset's ground truth would be
    read in the other's convention (image-level labels off by one class)."""
    config = write_config("dict(type='ConcatDataset', datasets=[{0}, dict({1}, "
                          "reduce_zero_label=True)])", ['voc_val_0'], ['voc_val_1'])
    with pytest.raises(UserInputError, match=r'^the train datasets of .* differ in their label '
                                             r'format: train_dataloader.dataset.datasets.0 has '):
        images_from_dataset_config(config, 'train')


def test_a_repeat_of_a_concat_lists_the_concats_datasets(write_config):
    """RepeatDataset(ConcatDataset(...)) opens down to the datasets (only the other nesting was
    listed by a test)."""
    config = write_config("dict(type='RepeatDataset', times=2, dataset=dict(type='ConcatDataset', "
                          "datasets=[{0}, {1}]))", ['voc_val_0'], ['voc_val_1'])
    assert [it.id for it in images_from_dataset_config(config, 'train')[0]] == [
        'voc_val_0', 'voc_val_1']
