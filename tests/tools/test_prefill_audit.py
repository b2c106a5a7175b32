"""Mutation audit of prefill.py: the labeler's engine settings come from the config's
DiffusionLabelPreprocessor unless the prefill's arguments give them; the summary is over all
ranks."""
import numpy as np
import pytest
import torch
from e2e_helpers import online_config
from mmengine.registry import DefaultScope

from mmdiffseg.models import prefill as prefill_module
from mmdiffseg.models.online_labeler import OnlineLabeler
from mmdiffseg.models.prefill import _labeler, config_label_caches


def test_the_labeler_takes_dtype_batch_and_engine_kwargs_from_the_preprocessor(tmp_path, tiny_sd):
    """engine_dtype, label_batch_size and engine_kwargs of the preprocessor reach the labeler
    (as the training run's); the dtype and batch_size arguments override the first two."""
    cfg = online_config(tmp_path, tiny_sd)
    cfg.model.data_preprocessor.update(engine_dtype='float16', label_batch_size=3,
                                       engine_kwargs=dict(attention_slicing=True))
    [spec] = config_label_caches(cfg)
    with DefaultScope.overwrite_default_scope('mmseg'):
        given = _labeler(cfg, spec, None, None).options
        other_cache = dict(spec, cache_dir=str(tmp_path / 'bfloat16'))  # the first is float16
        overridden = _labeler(cfg, other_cache, 'bfloat16', 5).options
    assert given == dict(dtype='float16', batch_size=3,
                         engine_kwargs=dict(attention_slicing=True),
                         overflow_fix='--dtype float32')   # (the prefill's option)
    assert overridden == dict(given, dtype='bfloat16', batch_size=5)


def test_the_summary_adds_up_the_counts_of_every_rank(tmp_path, tiny_sd, monkeypatch):
    """The counts (images, made, cached, all unsure, listed again, failed) are summed over the
    ranks (all_reduce) before the summary: another rank's 4 images (1 made, all unsure, 1
    cached, 1 listed again, 1 failed) are added to this rank's 4 images, all made and all
    unsure."""
    def label(self, todo, device):
        self.generated += len(todo)
        labels = {key: np.full((4, 4), 255, np.uint8) for key in todo}
        for key, made in labels.items():
            self.cache.save(key, made)
        return labels

    def other_rank(counts):   # (its 4 images of a share of 4: a whole share gone through)
        counts.add_(torch.tensor([4, 1, 1, 1, 1, 1, 4], dtype=counts.dtype))
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    monkeypatch.setattr(prefill_module, 'all_reduce', other_rank)
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(online_config(tmp_path, tiny_sd), 'cpu', batch_size=2,
                                         workers=0, progress=False)
    assert (summary.images, summary.made, summary.cached, summary.unsure, summary.repeated,
            summary.failed) == (8, 5, 1, 5, 1, 1)
    assert summary.total == 8 and summary.line().startswith(
        'prefill: 8 images: made 5, already cached 1, listed again 1, failed 1, made by another '
        'process 0')
    assert summary.cache_size == 4


def test_an_image_opencv_cannot_decode_stops_the_prefill_naming_it(tmp_path, tiny_sd,
                                                                   monkeypatch):
    """A training image cut short (a copy that stopped): the prefill stops with the error that
    names it and the fix (the tools' exit status 2), also when a loader process found it, whose
    exception would come with its traceback; it was a ValueError traceback."""
    from mmdiffseg.apis.io import UserInputError
    cfg = online_config(tmp_path, tiny_sd)
    image = sorted((tmp_path / 'voc' / 'JPEGImages').glob('*.png'))[1]
    data = image.read_bytes()
    image.unlink()  # a link to the shared sample: replaced, not written through
    image.write_bytes(data[:len(data) // 3])
    monkeypatch.setattr(OnlineLabeler, 'labels', lambda self, todo, device: {
        key: np.zeros((4, 4), np.uint8) for key in todo})
    for workers in (0, 1):
        with DefaultScope.overwrite_default_scope('mmseg'):
            with pytest.raises(UserInputError) as refused:
                prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=workers,
                                       progress=False)
        assert str(refused.value) == (
            f'cannot read image {image}: OpenCV cannot decode it (not an image, or damaged): '
            'replace it, or leave it out (remove the file, or its line in the split file that '
            'lists it)')


def test_an_image_that_cannot_be_read_after_labels_were_made_stops_with_the_counts(
        tmp_path, tiny_sd, monkeypatch):
    """Found after a batch was labelled (a file damaged during a long prefill, or the pre-flight
    skipped): exit status 2 said 'nothing done' and the log named no label made; the prefill
    stops with the counts (JobStopped, exit 3), the labels made kept."""
    from mmdiffseg.apis.io import JobStopped

    def label(self, todo, device):
        self.generated += len(todo)
        labels = {key: np.zeros((4, 4), np.uint8) for key in todo}
        for key, made in labels.items():
            self.cache.save(key, made)
        return labels
    cfg = online_config(tmp_path, tiny_sd)
    image = sorted((tmp_path / 'voc' / 'JPEGImages').glob('*.png'))[3]
    data = image.read_bytes()
    image.unlink()
    image.write_bytes(data[:len(data) // 3])
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    with DefaultScope.overwrite_default_scope('mmseg'):
        with pytest.raises(JobStopped) as stopped:
            prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=0, progress=False)
    assert str(stopped.value).startswith(f'cannot read image {image}: OpenCV cannot decode it')
    assert '; so far: prefill: 2 of 4 images: made 2, already cached 0' in str(stopped.value)
    assert len(list((tmp_path / 'cache').glob('??/*.png'))) == 2
