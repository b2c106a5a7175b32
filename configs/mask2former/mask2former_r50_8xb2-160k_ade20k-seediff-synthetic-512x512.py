# ADE20K synthetic-only (SeeDiff pairs from tools/synthesize.py with the 150 ADE20K classes),
# Mask2Former R50; validated on real ADE20K val. Data: configs/_base_/datasets/ade20k_generated.py:
#   python tools/synthesize.py --classes ade20k --images-per-class 400 --out data/synthetic/ade20k_seediff
# (masks index the 150 classes, 255 where no class; --classes bed,car --label-set ade20k: a subset)
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

train_dataloader = {{_base_.ade_synthetic_train_dataloader}}
