"""prefill's settings and summary without a Stable Diffusion run: what it takes from the config,
what its arguments override, the rank's share and the summary's wording."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from e2e_helpers import online_config

from mmdiffseg.datasets import LoadPseudoLabel, label_key
from mmdiffseg.models import prefill as prefill_module
from mmdiffseg.models.online_labeler import OnlineLabeler
from mmdiffseg.models.prefill import PrefillSummary, _full_batches, online_dataset_cfgs


def test_the_summary_counts_rate_and_notes():
    summary = PrefillSummary(images=10, made=4, cached=5, seconds=2.0, cache_dir='/c',
                             cache_size=9)
    assert str(summary) == ('prefill: 10 images: made 4, already cached 5, made by another '
                            'process 1; 2.0 s (2.00 labels/s); /c holds 9 labels')
    summary.unsure, summary.interrupted = 3, True
    lines = str(summary).splitlines()
    assert len(lines) == 3 and lines[1].startswith('3 of the labels made (here or by another ')
    assert lines[2] == ('interrupted: rerun the same command to resume (cached images are '
                        'skipped)')


def test_a_full_batch_is_labelled_before_the_loader_reads_on():
    read = []

    def loader():
        for batch in ([('a', 1, []), ('b', 1, [])], [('c', 1, [])]):
            read.append(batch)
            yield batch
    batches = _full_batches(loader(), 2, lambda *args: None)
    assert [key for key, _, _ in next(batches)] == ['a', 'b'] and len(read) == 1
    assert [key for key, _, _ in next(batches)] == ['c']


def test_only_datasets_with_online_labels_are_prefilled():
    online = dict(type='VOC', pipeline=[dict(type='LoadPseudoLabel', cache={})])
    masks = dict(type='VOC', pipeline=[dict(type='LoadAnnotations')])
    assert online_dataset_cfgs(dict(type='ConcatDataset', datasets=[masks, online])) == [online]
    # a type with its registry's scope, as mmengine builds it, or the class itself
    scoped = dict(type='VOC', pipeline=[dict(type='mmseg.LoadPseudoLabel', cache={})])
    given = dict(type='VOC', pipeline=[dict(type=LoadPseudoLabel, cache={})])
    assert online_dataset_cfgs(dict(type='ConcatDataset', datasets=[scoped, given])) == [
        scoped, given]


def test_a_scoped_online_step_needs_the_labelling_preprocessor():
    """Pre-flight reads ``mmseg.LoadPseudoLabel`` as the step it builds: without the
    preprocessor that makes the labels every target would stay 255."""
    from mmdiffseg.preflight_classes import check_model_classes
    dataset = dict(type='PascalVOCDataset', pipeline=[dict(type='mmseg.LoadPseudoLabel')])
    (item,) = check_model_classes(dict(data_preprocessor=dict(type='SegDataPreProcessor')),
                                  [('train_dataloader.dataset', dataset)])
    assert item.what.startswith('train_dataloader.dataset.pipeline.0 (LoadPseudoLabel) asks for '
                                'online labels, but model.data_preprocessor is '
                                "'SegDataPreProcessor'")
    assert check_model_classes(dict(data_preprocessor=dict(
        type='mmseg.DiffusionLabelPreprocessor')), [('train_dataloader.dataset', dataset)]) == []


def test_arguments_override_the_preprocessor_and_ranks_share_quietly(
        tmp_path, tiny_sd, monkeypatch, capsys):
    """dtype and workers come from the preprocessor and the train dataloader unless given; rank 1
    of 2 labels every other image (the keys training looks up) and draws no progress bar."""
    seen, loaders = [], []

    def label(self, todo, device):
        seen.append((self.options['dtype'], sorted(todo)))
        self.generated += len(todo)
        return {key: np.zeros((4, 4), np.uint8) for key in todo}

    class Loader(torch.utils.data.DataLoader):
        def __init__(self, *args, num_workers, **kwargs):
            loaders.append(num_workers)
            super().__init__(*args, num_workers=0, **kwargs)
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    monkeypatch.setattr(torch.utils.data, 'DataLoader', Loader)
    monkeypatch.setattr(prefill_module, 'get_dist_info', lambda: (1, 2))
    cfg = online_config(tmp_path, tiny_sd)
    cfg.train_dataloader.num_workers = 3
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=4, dtype='float16')
        prefill_module.prefill(cfg, 'cpu', batch_size=4, workers=1, progress=False)
        [dataset] = prefill_module._build_datasets(
            online_dataset_cfgs(cfg.train_dataloader.dataset))
    assert capsys.readouterr().out == ''
    assert loaders == [3, 1] and summary.images == summary.made == 2
    assert [dtype for dtype, _ in seen] == ['float16', 'float32']
    keys = [label_key(open(dataset[i]['img_path'], 'rb').read(), dataset[i]['image_labels'])
            for i in range(len(dataset))]
    assert seen[0][1] == sorted(keys[1::2])


def test_a_config_that_trains_on_other_labels_is_refused(tmp_path, tiny_sd):
    cfg = online_config(tmp_path, tiny_sd)
    cfg.model.data_preprocessor = Config(dict(type='SegDataPreProcessor'))
    with pytest.raises(ValueError, match='model.data_preprocessor is not a '
                       'DiffusionLabelPreprocessor'):
        prefill_module.prefill(cfg, 'cpu', progress=False)


def test_ctrl_c_keeps_the_counts_of_the_batches_done(tmp_path, tiny_sd, monkeypatch):
    """Interrupted at the second batch: the first one's labels are counted (one all unsure, one
    only partly: not counted as unsure) and the summary says how to resume."""
    def label(self, todo, device):
        if self.generated:
            raise KeyboardInterrupt
        self.generated += len(todo)
        partly = np.zeros((4, 4), np.uint8)
        partly[0] = 255
        labels = dict(zip(todo, [np.full((4, 4), 255, np.uint8), partly]))
        for key, made in labels.items():
            self.cache.save(key, made)
        return labels
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(online_config(tmp_path, tiny_sd), 'cpu', batch_size=2,
                                         workers=0, progress=False)
    assert (summary.images, summary.made, summary.unsure, summary.interrupted) == (2, 2, 1, True)
    assert summary.cache_size == 2
