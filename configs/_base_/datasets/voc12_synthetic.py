# Synthetic VOC image-mask pairs written by tools/synthesize.py (SeeDiff):
# data/synthetic/voc12_seediff/{JPEGImages/*.jpg, SegmentationClass/*.png (palette),
# ImageSets/Segmentation/train.txt, manifest.jsonl}; validation on real VOC 2012 val
# (data/VOCdevkit/VOC2012).
_base_ = ['./voc12_iseg_online.py']

voc_synthetic_root = 'data/synthetic/voc12_seediff'
voc_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size={{_base_.voc_crop_size}}, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
voc_synthetic_train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='SyntheticVOCDataset',
        data_root=voc_synthetic_root,
        pipeline=voc_train_pipeline))
# fine-tuning on real VOC (train_aug list, SegmentationClassAug masks)
voc_real_train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root={{_base_.voc_data_root}},
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        ann_file='ImageSets/Segmentation/aug.txt',
        pipeline=voc_train_pipeline))
# VOC aug images with pixel labels made offline by tools/pseudo_label.py from image_labels.json
# (iSeg; docs/data.md has the command, which lists the images by the online config's aug
# split): data/pseudo_labels/voc12_iseg/{SegmentationClass/<id>.png, manifest.jsonl}; its split
# file lists the images it labelled (an image it could not label is left out, not trained on)
voc_pseudo_train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PseudoLabelVOCDataset',
        data_root='',
        data_prefix=dict(img_path='data/VOCdevkit/VOC2012/JPEGImages',
                         seg_map_path='data/pseudo_labels/voc12_iseg/SegmentationClass'),
        ann_file='data/pseudo_labels/voc12_iseg/ImageSets/Segmentation/train.txt',
        pipeline=voc_train_pipeline))
