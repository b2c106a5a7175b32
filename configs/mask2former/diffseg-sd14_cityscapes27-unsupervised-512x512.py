# DiffSeg's unsupervised protocol on Cityscapes-27 (no training; run with tools/test.py without a
# checkpoint): DiffSeg segments (SD v1.4, fp32, KL thresholds 0.9 x3 for Cityscapes) scored by
# per-image Hungarian matching (ACC, mIoU). merge_precision='float16' is the released first merging
# pass (anchors whose maps underflow float16 are dropped), the behaviour that produced the
# published Cityscapes ACC 76.0 / mIoU 21.2; 'float32' keeps every anchor (guarded logs). Inherits the stock Mask2Former Cityscapes runtime and
# replaces the model. Data: see configs/_base_/datasets/cityscapes27_unsupervised.py.
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py',
    '../_base_/datasets/cityscapes27_unsupervised.py',
]
custom_imports = dict(
    imports=['mmdiffseg', 'mmdet.models'],
    allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='DiffusionSegmentor',
    sd_model='CompVis/stable-diffusion-v1-4',
    generator=dict(type='DiffSeg', kl_thresholds=(0.9, 0.9, 0.9), merge_precision='float16'),
    engine_dtype='float32',
    batch_size=1,
    data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True))
test_dataloader = {{_base_.cityscapes27_test_dataloader}}
val_dataloader = test_dataloader
# what mmseg's inference_model reads (else the stock Cityscapes resize to 2048x1024); the COCO-Stuff
# evaluation inherits it, its loader's pipeline being the same
test_pipeline = {{_base_.diffseg_protocol_pipeline}}
# replace the stock IoUMetric (each evaluator is its own dict: `_delete_` is used up by a merge)
test_evaluator = dict(_delete_=True, type='HungarianMatchedIoU', num_classes=27)
val_evaluator = dict(_delete_=True, type='HungarianMatchedIoU', num_classes=27)
# predictions at the model input's size (a crop, a resize), drawn on that input: mmseg's
# SegVisualizationHook draws on the image file (default_hooks.visualization.draw=True stopped there)
default_hooks = dict(visualization=dict(_delete_=True, type='ModelInputVisualizationHook'))
# test only: without the inherited Cityscapes training (data, 90k iterations, optimizer), nothing
# (e.g. a hook reading runner.iter) builds a train loader that needs leftImg8bit/train
train_dataloader = None
train_cfg = None
optim_wrapper = None
param_scheduler = None
