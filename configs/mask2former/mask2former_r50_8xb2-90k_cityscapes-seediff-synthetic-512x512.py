# Synthetic-only Cityscapes (SeeDiff, human / vehicle classes): Mask2Former R50 trained on
# synthetic pairs of background / human / vehicle, validated on real Cityscapes val grouped into
# the same classes. Data: see configs/_base_/datasets/cityscapes_synthetic.py.
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py',
    '../_base_/datasets/cityscapes_synthetic.py',
]
custom_imports = dict(
    imports=['mmdiffseg', 'mmdet.models'],
    allow_failed_imports=False)

num_classes = 3
model = dict(
    data_preprocessor=dict(size={{_base_.cityscapes_synthetic_crop}}),
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
train_dataloader = {{_base_.cityscapes_synthetic_train_dataloader}}
val_dataloader = {{_base_.cityscapes_human_vehicle_val_dataloader}}
test_dataloader = val_dataloader
