# ADE20K from iSeg pseudo labels of the training images (tools/pseudo_label.py), Mask2Former R50;
# validated on real ADE20K val. Data: see configs/_base_/datasets/ade20k_generated.py; the labels:
# tools/pseudo_label.py --classes ade20k --config configs/iseg/iseg_wsss_ade20k.py (docs/data.md).
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    '../_base_/datasets/ade20k_generated.py',
]
custom_imports = dict(
    imports=['mmdiffseg', 'mmdet.models'],
    allow_failed_imports=False)
# unsure (255) pixels leave the mask losses and matching costs instead of counting as negatives
# (mmdiffseg.models.unsure_pixels_head); the stock head: model.decode_head.type=Mask2FormerHead
model = dict(decode_head=dict(type='UnsurePixelsIgnoredMask2FormerHead'))

train_dataloader = {{_base_.ade_pseudo_train_dataloader}}
