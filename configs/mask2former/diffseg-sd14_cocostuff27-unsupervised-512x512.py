# DiffSeg's unsupervised protocol on COCO-Stuff-27 (no training; run with tools/test.py without a
# checkpoint): DiffSeg segments (SD v1.4, fp32, KL thresholds 1.1 x3 for COCO-Stuff) scored by
# per-image Hungarian matching (ACC, mIoU; published: ACC 72.5 / mIoU 43.6). Everything else as the
# Cityscapes-27 evaluation it inherits (merge_precision='float16': the released first merging pass).
# Data: see configs/_base_/datasets/cocostuff27_unsupervised.py.
_base_ = [
    './diffseg-sd14_cityscapes27-unsupervised-512x512.py',
    '../_base_/datasets/cocostuff27_unsupervised.py',
]
model = dict(generator=dict(kl_thresholds=(1.1, 1.1, 1.1)))
test_dataloader = {{_base_.cocostuff27_test_dataloader}}
val_dataloader = test_dataloader
# mmseg's inference_model reads it (JPEGs decoded as TensorFlow decodes them; MMSegInferencer
# looks for a LoadImageFromFile step: use init_model / inference_model with this config)
test_pipeline = {{_base_.cocostuff27_protocol_pipeline}}
