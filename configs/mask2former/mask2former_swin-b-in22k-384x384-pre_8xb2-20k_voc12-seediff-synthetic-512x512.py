# Synthetic-only VOC (SeeDiff): Mask2Former Swin-B (ImageNet-22k) trained on image-mask pairs
# made by tools/synthesize.py, validated on real VOC 2012 val.
# Data: see configs/_base_/datasets/voc12_synthetic.py.
_base_ = [
    'mmseg::mask2former/mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py',
    '../_base_/datasets/voc12_synthetic.py',
]
custom_imports = dict(
    imports=['mmdiffseg', 'mmdet.models'],
    allow_failed_imports=False)

crop_size = (512, 512)
num_classes = 21
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
train_dataloader = {{_base_.voc_synthetic_train_dataloader}}
val_dataloader = {{_base_.voc_val_dataloader}}
test_dataloader = val_dataloader
# mmseg's inference_model / init_model read the top-level test_pipeline (not the dataloader's)
test_pipeline = {{_base_.voc_test_pipeline}}
train_cfg = dict(max_iters=20000, val_interval=2000)
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=20000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=2000))
