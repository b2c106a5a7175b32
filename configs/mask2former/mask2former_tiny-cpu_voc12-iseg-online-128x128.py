# CPU test / smoke config: the VOC iSeg online recipe with a shrunk Mask2Former, 128x128 crops,
# 4 iterations, no dataloader workers. It reads work_dirs/tiny-stable-diffusion-2-1-base (the tiny
# random-weights SD that tools/build_tiny_sd.py writes: README "A first run on the CPU") and
# data/VOCdevkit/VOC2012; another diffusers folder:
# --cfg-options train_dataloader.dataset.pipeline.2.cache.model=FOLDER.
_base_ = [
    './mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py',
    '../_base_/models/mask2former_tiny_cpu.py',
    '../_base_/generators/iseg_voc_tiny_sd.py',
]
crop_size = (128, 128)
tiny_label_cache = dict(
    cache_dir='work_dirs/label_cache/iseg_voc_tiny_sd',
    model='work_dirs/tiny-stable-diffusion-2-1-base',
    generator={{_base_.tiny_label_generator}})
model = dict(
    data_preprocessor=dict(engine_dtype='float32', size=crop_size),
    backbone={{_base_.tiny_backbone}},
    decode_head={{_base_.tiny_decode_head}})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadImageLevelLabels', classes='voc', ann_file=None),
    dict(type='LoadPseudoLabel', cache=tiny_label_cache),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackPseudoLabelInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = {{_base_.tiny_train_cfg}}
default_hooks = {{_base_.tiny_default_hooks}}
custom_hooks = [dict(type='OnlineLabelVisualizationHook', interval=2, max_images=1)]
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=4, by_epoch=False)]
randomness = dict(seed=0)  # the first run's figures repeat (README)
