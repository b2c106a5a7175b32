"""Pre-flight on settings that need CUDA (mmdiffseg.preflight): each is named with the
--cfg-options or tool option that runs without it, in training, prefill and the offline tools,
before any model loads."""
import re

import pytest
import torch
from mmengine.config import Config
from test_preflight import NO_CUDA, tiny_online_config, tiny_sd  # noqa: F401 (a fixture)

from mmdiffseg import preflight


@NO_CUDA
def test_cuda_settings_need_a_gpu():
    """Each setting that needs CUDA is named with the --cfg-options that runs without it; applied,
    they leave nothing missing."""
    cfg = Config(dict(model=dict(data_preprocessor=dict(engine_dtype='float16', device='cuda:0')),
                      optim_wrapper=dict(type='AmpOptimWrapper'), launcher='slurm',
                      env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    (item,) = preflight.check(cfg, 'train')
    assert item.what.startswith('a CUDA device')
    assert 'optim_wrapper.type=AmpOptimWrapper (AMP: drop --amp' in item.fix
    options = dict(option.split('=') for option in re.findall(r'--cfg-options (\S+=\w+)', item.fix))
    assert options == {'model.data_preprocessor.engine_dtype': 'float32',
                       'model.data_preprocessor.device': 'cpu', 'env_cfg.dist_cfg.backend': 'gloo'}
    cfg.merge_from_dict(options)
    cfg.optim_wrapper.type = 'OptimWrapper'
    assert preflight.check(cfg, 'train') == []


@NO_CUDA
def test_prefill_without_cuda_refuses_float16_as_training_does(tmp_path, tiny_sd):
    """The labeler's engine_dtype=float16 (prefill's default dtype) needs CUDA as in training, with
    the same --cfg-options fix; prefill's own --dtype / --device count when passed."""
    cfg = tiny_online_config(tmp_path, tiny_sd)
    cfg.model.data_preprocessor.engine_dtype = 'float16'
    for mode in ('prefill', 'train'):
        (item,) = preflight.check(cfg, mode)
        assert item.what.startswith('a CUDA device') and \
            '--cfg-options model.data_preprocessor.engine_dtype=float32' in item.fix
    assert preflight.check(cfg, 'prefill', dtype='float32') == []
    cfg.merge_from_dict({'model.data_preprocessor.engine_dtype': 'float32'})
    assert preflight.check(cfg, 'prefill') == []
    (item,) = preflight.check(cfg, 'prefill', dtype='float16', device='cuda')
    assert '--dtype float16 (--dtype float32' in item.fix
    assert '--device cuda (--device cpu)' in item.fix


@NO_CUDA
@pytest.mark.parametrize('key, value, fix', [
    ('noise_draw', 'cuda_float16', 'cpu draws the noise on the CPU'),
    ('postprocess_backend', 'graph', 'auto replays CUDA graphs only on a GPU')])
def test_cuda_only_generator_settings_are_named_before_any_work(tmp_path, tiny_sd, key, value,
                                                                fix):
    """iSeg's noise_draw='cuda_float16' or postprocess_backend='graph' in the label cache's
    generator: pre-flight names it with its --cfg-options fix; the online labeler refuses it
    before its model loads (it failed at the first batch)."""
    cfg = tiny_online_config(tmp_path, tiny_sd)
    generator = 'train_dataloader.dataset.pipeline.2.cache.generator'
    cfg.merge_from_dict({f'{generator}.{key}': value})
    for mode in ('prefill', 'train'):
        (item,) = preflight.check(cfg, mode)
        assert item.what.startswith('a CUDA device') and \
            f'--cfg-options {generator}.{key}={fix}' in item.fix
    from mmdiffseg.models.online_labeler import AttentionLabeler
    labeler = AttentionLabeler(str(tmp_path / 'not-loaded'),
                               dict(type='ISeg', cross_heads=None, **{key: value}))
    with pytest.raises(ValueError, match=f"{key}='{value}'.*"):
        labeler.load_engine(torch.device('cpu'))


@NO_CUDA
@pytest.mark.parametrize('generator, match', [
    (dict(type='ISeg', noise_draw='cuda_float16'),
     "noise_draw='cuda_float16'.*needs the engine on a CUDA device, this one is on cpu"),
    (dict(type='ISeg', postprocess_backend='graph'),
     r"ISeg\(postprocess_backend='graph'\) needs CUDA tensors, got cpu; use "
     "postprocess_backend='auto' or 'torch'"),
    (dict(type='DiffSeg', postprocess_backend='graph'),
     r"DiffSeg\(postprocess_backend='graph'\) needs CUDA tensors"),
    (dict(type='SeeDiff', classes=['cat'], pamr_backend='graph'),
     r"PAMR\(backend='graph'\) needs CUDA tensors"),
    (dict(type='SeeDiff', classes=['cat'], pamr_backend='triton'),
     r"PAMR\(backend='triton'\) cannot run here")])
def test_the_tools_refuse_cuda_only_settings_before_the_model_loads(tmp_path, generator, match):
    """The offline tools' load_engine (exit 2, no folder left): before, the model loaded and the
    first batch (or, for SeeDiff, the whole sampling) ran before the ValueError."""
    from mmdiffseg.apis.builders import load_engine
    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.registry import MASK_GENERATORS
    with pytest.raises(UserInputError, match=match):
        load_engine(str(tmp_path / 'not-loaded'), 'cpu', generator=MASK_GENERATORS.build(generator))
