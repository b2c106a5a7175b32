"""Pre-flight: what a run's classes are compared with beyond its training set: a pipeline's
zero-label convention against its dataset's, the test set against the classes its checkpoint was
trained on (mmengine's meta.dataset_meta) and, in training, against what the model learns."""
import numpy as np
import pytest
from e2e_helpers import REPO
from mmengine.config import Config

from mmdiffseg import preflight
from mmdiffseg.datasets.class_names import DATASET_CLASSES
from mmdiffseg.preflight_label_files import check_label_convention

TINY_ONLINE = REPO / 'configs/mask2former/mask2former_tiny-cpu_voc12-iseg-online-128x128.py'


@pytest.fixture(autouse=True)
def no_network_probes(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    preflight.reachable.cache_clear()


def test_a_pipeline_forcing_the_other_zero_label_convention_is_named_before_the_run():
    """The ADE20K generated-label config inherited for one's own masks (BaseSegDataset) kept
    LoadAnnotations(reduce_zero_label=True): the pre-flight passed, training ran to its first
    validation and mmseg's assertion stopped it there; its fix, the dataset's
    reduce_zero_label=True, would score class k + 1 as k. Each dataset's own or its class's
    default convention is compared; a step that leaves it to the dataset is not."""
    forced = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True)]
    (item,) = check_label_convention(dict(type='BaseSegDataset', pipeline=forced), 'val.dataset')
    assert item.what == ('val.dataset.pipeline.1 (LoadAnnotations) reads the masks with '
                         'reduce_zero_label=True, but the dataset (BaseSegDataset) with '
                         'reduce_zero_label=False: mmseg stops at the first mask it loads')
    assert item.fix.startswith('remove val.dataset.pipeline.1.reduce_zero_label (the dataset '
                               'applies its own)')
    assert item.where == ['val.dataset.pipeline.1.reduce_zero_label']
    assert check_label_convention(dict(type='ADE20KDataset', pipeline=forced), 'v') == []
    assert check_label_convention(dict(type='PascalVOCDataset', reduce_zero_label=True,
                                       pipeline=forced), 'v') == []
    (item,) = check_label_convention(dict(type='ADE20KDataset', pipeline=[
        dict(type='LoadAnnotations', reduce_zero_label=False)]), 'v')
    assert 'reduce_zero_label=False, but the dataset (ADE20KDataset) with reduce_zero_label=True' \
        in item.what
    for kind in ('BaseSegDataset', 'ADE20KDataset', 'PseudoLabelDataset'):
        assert check_label_convention(dict(type=kind, pipeline=[dict(type='LoadAnnotations')]),
                                      'v') == []
    cfg = Config.fromfile(str(TINY_ONLINE))   # where the whole check reads val sets
    cfg.val_dataloader.dataset.pipeline.insert(
        1, dict(type='LoadAnnotations', reduce_zero_label=True))
    assert [m.where for m in preflight.check(cfg, 'train') if 'reduce_zero_label' in m.what] == [
        ['val_dataloader.dataset.pipeline.1.reduce_zero_label']]


@pytest.mark.parametrize('legacy', [False, True])
def test_a_test_set_in_another_order_than_the_checkpoints_classes_is_named(tmp_path, legacy):
    """tools/test.py on a test set whose classes are those of training in another order
    passed, and scored each class's IoU under another's name: the checkpoint records what it
    learnt (mmengine's meta.dataset_meta), read here without its weights, in either format."""
    import torch
    voc = list(DATASET_CLASSES['voc'])
    swapped = [voc[0], voc[2], voc[1], *voc[3:]]
    checkpoint = tmp_path / 'iter_2.pth'
    torch.save(dict(meta=dict(dataset_meta=dict(classes=voc)), state_dict={}), checkpoint,
               _use_new_zipfile_serialization=not legacy)
    cfg = Config.fromfile(str(TINY_ONLINE))
    cfg.load_from = str(checkpoint)
    cfg.test_dataloader.dataset.metainfo = dict(classes=swapped)
    found = {w: m for m in preflight.check(cfg, 'test') for w in m.where}
    item = found['test_dataloader.dataset.metainfo']
    assert item.what.startswith(
        "test_dataloader.dataset has the classes ['background', 'bicycle', 'aeroplane', 'bird', "
        f"'boat', 'bottle', '...'] (21 classes), but load_from ({checkpoint}: the classes it was "
        "trained on), which the model learns, has 'voc' (21 classes); index 1 is 'bicycle' in "
        "test_dataloader.dataset but 'aeroplane' in load_from")
    cfg.test_dataloader.dataset.metainfo = dict(classes=voc)
    assert not [m for m in preflight.check(cfg, 'test') if 'metainfo' in str(m.where)]


def test_training_names_a_test_set_of_other_classes_than_it_learns():
    """The test set is what the trained model meets: training compared only its val set."""
    voc = list(DATASET_CLASSES['voc'])
    cfg = Config.fromfile(str(TINY_ONLINE))
    cfg.test_dataloader = dict(cfg.val_dataloader, dataset=dict(
        cfg.val_dataloader.dataset, metainfo=dict(classes=[voc[0], voc[2], voc[1], *voc[3:]])))
    found = {w: m for m in preflight.check(cfg, 'train') for w in m.where}
    assert found['test_dataloader.dataset.metainfo'].what.startswith(
        "test_dataloader.dataset has the classes ['background', 'bicycle'")
    assert 'val_dataloader.dataset.metainfo' not in found


def test_checkpoint_classes_of_any_sequence_or_none(tmp_path):
    """Classes stored as a numpy array crashed the test pre-flight (its truth value); a
    checkpoint without them, or not a file, gives None (nothing compared)."""
    import torch
    from mmdiffseg.preflight_checkpoints import checkpoint_classes
    path = tmp_path / 'c.pth'
    torch.save(dict(meta=dict(dataset_meta=dict(classes=np.array(['a', 'b'])))), path)
    assert checkpoint_classes(str(path)) == ['a', 'b']
    torch.save(dict(state_dict={}), path)
    assert checkpoint_classes(str(path)) is None
    assert checkpoint_classes(str(tmp_path / 'none.pth')) is None
    assert checkpoint_classes('https://example.com/c.pth') is None
