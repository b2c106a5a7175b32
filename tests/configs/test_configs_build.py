"""Every shipped Mask2Former config loads, builds its model (no weights) and its pipelines."""
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmseg.registry import METRICS, MODELS

import mmdiffseg  # noqa: F401
import mmdiffseg.datasets  # noqa: F401
import mmdiffseg.evaluation  # noqa: F401
import mmdiffseg.models  # noqa: F401

CONFIGS = sorted((Path(__file__).resolve().parents[2] / 'configs' / 'mask2former').glob('*.py'))
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def test_configs_are_found():
    assert len(CONFIGS) >= 15


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    head = cfg.model.get('decode_head')
    if head is not None:   # Mask2Former: one class weight per class plus "no object"
        assert len(head.loss_cls.class_weight) == head.num_classes + 1
        assert model.decode_head.num_classes == head.num_classes
        # the metainfo of the evaluated data has the model's classes
        dataset_type = cfg.val_dataloader.dataset.type
        metainfo = mmdiffseg.datasets.__dict__.get(dataset_type) or \
            __import__('mmseg.datasets', fromlist=[dataset_type]).__dict__[dataset_type]
        assert len(metainfo.METAINFO['classes']) == head.num_classes
    for loader in LOADERS:
        if cfg.get(loader) and cfg[loader].get('dataset'):   # test-only configs: no train
            Compose(cfg[loader].dataset.pipeline)
    if cfg.get('test_dataloader'):
        # mmseg's inference_model reads the top-level test_pipeline: the Swin-B VOC configs
        # inherited ADE20K's (640x640), predicting at another scale than tools/test.py scores
        def steps(pipeline):
            return [{k: v for k, v in step.items() if k != '_scope_'} for step in pipeline
                    if step['type'] != 'LoadAnnotations']
        assert steps(cfg.test_pipeline) == steps(cfg.test_dataloader.dataset.pipeline)
    for key in ('val_evaluator', 'test_evaluator'):
        if cfg.get(key):
            METRICS.build(cfg[key])
    online = cfg.model.get('data_preprocessor', {}).get('type') == 'DiffusionLabelPreprocessor'
    # pictures of the online labels in the online-label configs, not in those of stored labels
    hooks = [h.type for h in cfg.get('custom_hooks', [])]
    assert ('OnlineLabelVisualizationHook' in hooks) == online, hooks
    if online:
        # online labels: one label cache (folder, model, generator), in LoadPseudoLabel only
        steps = [s for s in cfg.train_dataloader.dataset.pipeline if s.type == 'LoadPseudoLabel']
        assert len(steps) == 1 and {'cache_dir', 'model', 'generator'} <= set(steps[0].cache)
        assert 'label_cache' not in cfg.model.data_preprocessor
