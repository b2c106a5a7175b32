# Weakly supervised VOC (iSeg online labels), Mask2Former Swin-B (ImageNet-22k); 512x512 crops.
# Data: see configs/_base_/datasets/voc12_iseg_online.py.
_base_ = [
    'mmseg::mask2former/mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py',
    '../_base_/datasets/voc12_iseg_online.py',
]
custom_imports = dict(
    imports=['mmdiffseg', 'mmdet.models'],
    allow_failed_imports=False)

crop_size = (512, 512)
num_classes = 21
model = dict(
    data_preprocessor={{_base_.voc_online_data_preprocessor}},
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
train_dataloader = {{_base_.voc_online_train_dataloader}}
custom_hooks = {{_base_.voc_online_custom_hooks}}
val_dataloader = {{_base_.voc_val_dataloader}}
test_dataloader = val_dataloader
# mmseg's inference_model / init_model read the top-level test_pipeline (not the dataloader's)
test_pipeline = {{_base_.voc_test_pipeline}}
train_cfg = dict(max_iters=20000, val_interval=2000)
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=20000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=2000))
