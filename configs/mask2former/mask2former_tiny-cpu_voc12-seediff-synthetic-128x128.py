# CPU test / smoke config: the VOC synthetic-only recipe with a shrunk Mask2Former, 128x128 crops,
# 4 iterations, no dataloader workers. Point train_dataloader.dataset.data_root at a synthetic
# folder and the val / test datasets at a VOC-layout folder.
_base_ = [
    './mask2former_r50_8xb2-20k_voc12-seediff-synthetic-512x512.py',
    '../_base_/models/mask2former_tiny_cpu.py',
]
crop_size = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone={{_base_.tiny_backbone}},
    decode_head={{_base_.tiny_decode_head}})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
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
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=4, by_epoch=False)]
