# PASCAL VOC 2012 + SBD (the 10,582-image aug split) with image-level labels only: pixel labels are
# made online by iSeg (DiffusionLabelPreprocessor) and cached; validation on the real val masks.
# Data (tools/dataset_converters/voc_aug.py writes what VOC + SBD lack; docs/data.md):
# data/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug,
# ImageSets/Segmentation/{train,aug,val}.txt, image_labels.json}, the last
# {"2007_000032": ["aeroplane", "person"], ...} (image-level class names, no 'background').
# Set `ann_file=None` in LoadImageLevelLabels to read them from the ground truth (oracle setting).
# The Stable Diffusion model is set in one place, the label cache of LoadPseudoLabel (step 2):
#   --cfg-options train_dataloader.dataset.pipeline.2.cache.model=/models/stable-diffusion-2-1-base
# Warm start (label every training image before training): tools/prefill_labels.py CONFIG.
_base_ = ['../generators/iseg_voc_sd21base.py']

voc_data_root = 'data/VOCdevkit/VOC2012'
voc_crop_size = (512, 512)
voc_online_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadImageLevelLabels', classes='voc', ann_file=voc_data_root + '/image_labels.json'),
    dict(type='LoadPseudoLabel', cache={{_base_.label_cache}}),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=voc_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackPseudoLabelInputs'),
]
voc_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
voc_online_train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root=voc_data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        ann_file='ImageSets/Segmentation/aug.txt',
        pipeline=voc_online_train_pipeline))
voc_val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root=voc_data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=voc_test_pipeline))
# the preprocessor that makes the missing labels, with the label cache of the samples
# (merged into the stock SegDataPreProcessor settings)
voc_online_data_preprocessor = dict(
    type='DiffusionLabelPreprocessor',
    size=voc_crop_size,
    engine_dtype='float16',
    label_batch_size=4)
# pictures of the training labels (online or cached, after augmentation) every 1000 iterations:
# <work_dir>/<timestamp>/vis_data/vis_image/online_label_<image file name>_<iter>.png; the
# online-label configs set custom_hooks to it (a variable here: voc12_synthetic.py inherits this file)
voc_online_custom_hooks = [dict(type='OnlineLabelVisualizationHook', interval=1000, max_images=2)]
