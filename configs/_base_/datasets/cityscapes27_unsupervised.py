# Cityscapes val in DiffSeg's unsupervised protocol: labelIds 7..33 -> 27 classes (rest ignored),
# centre square crop (1024x1024 of a 2048x1024 frame), image bilinear (float32, unrounded) / label
# nearest (half-pixel, as TF's) resize to 512x512.
# Data: data/cityscapes as in mmseg (leftImg8bit/val, gtFine/val with *_gtFine_labelIds.png).
diffseg_protocol_pipeline = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation'),  # PNGs, as TF's
    dict(type='LoadAnnotations'),
    dict(type='CenterSquareCrop'),  # 1024x1024 of a 2048x1024 frame
    dict(type='ResizeHalfPixelLabels', scale=(512, 512), keep_ratio=False),
    dict(type='PackSegInputs'),
]
cityscapes27_test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='Cityscapes27Dataset',
        data_root='data/cityscapes',
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=diffseg_protocol_pipeline))
