# CPU test / smoke config: fine-tune the tiny synthetic-only model on real VOC-layout data;
# set load_from to the synthetic run's checkpoint.
_base_ = ['./mask2former_tiny-cpu_voc12-seediff-synthetic-128x128.py']
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root='data/VOCdevkit/VOC2012',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/train.txt',
        pipeline={{_base_.train_pipeline}}))
load_from = 'work_dirs/mask2former_tiny-cpu_voc12-seediff-synthetic-128x128/iter_4.pth'
# its weights must fit this model and classes: another backbone's, or another class count's, is
# refused as it loads (mmengine would leave those weights random and train on)
custom_hooks = [dict(type='CheckpointFitHook')]
