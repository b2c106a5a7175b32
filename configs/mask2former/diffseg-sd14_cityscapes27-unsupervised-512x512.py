# DiffSeg's unsupervised protocol on Cityscapes-27 (no training; run with tools/test.py without a
# checkpoint): DiffSeg segments (SD v1.4, fp32, KL thresholds 0.9 x3 for Cityscapes) scored by
# per-image Hungarian matching (ACC, mIoU). Inherits the stock Mask2Former Cityscapes runtime and
# replaces the model. Data: see configs/_base_/datasets/cityscapes27_unsupervised.py.
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py',
    '../_base_/datasets/cityscapes27_unsupervised.py',
]
custom_imports = dict(
    imports=['mmdet.models', 'mmdiffseg', 'mmdiffseg.datasets', 'mmdiffseg.models',
             'mmdiffseg.evaluation'],
    allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='DiffusionSegmentor',
    sd_model='CompVis/stable-diffusion-v1-4',
    generator=dict(type='DiffSeg', kl_thresholds=(0.9, 0.9, 0.9)),
    engine_dtype='float32',
    batch_size=1,
    data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True))
test_dataloader = {{_base_.cityscapes27_test_dataloader}}
test_evaluator = {{_base_.cityscapes27_test_evaluator}}
val_dataloader = test_dataloader
val_evaluator = test_evaluator
