# ADE20K with generated labels (0-based class indices, 255 unsure, so reduce_zero_label=False,
# unlike ADE20K's own annotations):
# * pseudo labels of the real training images by tools/pseudo_label.py:
#   data/pseudo_labels/ade20k_iseg/{SegmentationClass/ADE_train_*.png, ImageSets/Segmentation/
#   train.txt, manifest.jsonl}
# * synthetic pairs by tools/synthesize.py: data/synthetic/ade20k_seediff (VOC layout).
# To mix either with real ADE20K, use ConcatDataset(..., ignore_keys=['reduce_zero_label']) and
# LoadAnnotations() without reduce_zero_label in every pipeline (each sample carries its own).
# Mask2Former and 255: mmseg's head leaves 255 out of the classes, but mmdet's mask and dice point
# losses (and the matching costs) count a 255 pixel as a negative for every query's mask. ADE20K
# has no background class, so a synthetic image is 255 outside its one object: the stock head
# would train its walls, floors, sky as belonging to no query's mask. The ADE20K configs therefore
# use UnsurePixelsIgnoredMask2FormerHead, which leaves 255 pixels out of those losses and costs.
ade_crop_size = (512, 512)
ade_generated_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=ade_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
ade_pseudo_train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='PseudoLabelADE20KDataset',
        data_root='',
        data_prefix=dict(
            img_path='data/ade/ADEChallengeData2016/images/training',
            seg_map_path='data/pseudo_labels/ade20k_iseg/SegmentationClass'),
        # the images the tool labelled: it leaves out those it could not (e.g. an image naming
        # more classes than the 77-token prompt holds)
        ann_file='data/pseudo_labels/ade20k_iseg/ImageSets/Segmentation/train.txt',
        pipeline=ade_generated_train_pipeline))
ade_synthetic_train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='SyntheticADE20KDataset',
        data_root='data/synthetic/ade20k_seediff',
        pipeline=ade_generated_train_pipeline))
