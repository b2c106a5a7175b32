"""Mutation audit of prefill.py: the labeler's engine settings come from the config's
DiffusionLabelPreprocessor unless the prefill's arguments give them."""
from e2e_helpers import online_config
from mmengine.registry import DefaultScope

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
        overridden = _labeler(cfg, spec, 'bfloat16', 5).options
    assert given == dict(dtype='float16', batch_size=3,
                         engine_kwargs=dict(attention_slicing=True))
    assert overridden == dict(given, dtype='bfloat16', batch_size=5)
