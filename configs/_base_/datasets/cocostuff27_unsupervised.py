# COCO-Stuff-27 in DiffSeg's unsupervised protocol: the 2,175 curated val2017 images of IIC / PiCIE
# / STEGO, COCO-Stuff's fine labels mapped to the 27 coarse classes (things by COCO supercategory,
# stuff by COCO-Stuff's; 'other' and unlabelled ignored), JPEGs decoded as the release's TensorFlow
# decodes them (fast integer IDCT, EXIF orientation ignored), centre square crop, image bilinear
# (float32, unrounded) / label nearest (half-pixel, as TF's) resize to 512x512.
# Data: data/coco_stuff164k as in mmseg (images/val2017/*.jpg; annotations/val2017/*.png from
# stuffthingmaps_trainval2017.zip, read as shipped), plus the curated list as
# curated/val2017/Coco164kFull_Stuff_Coarse_7.txt (one image id per line): docs/data.md.
cocostuff27_protocol_pipeline = [
    dict(type='LoadImageTFDecode'),  # tf.io.decode_jpeg's decoding, EXIF ignored
    dict(type='LoadAnnotations'),
    dict(type='CenterSquareCrop'),
    dict(type='ResizeHalfPixelLabels', scale=(512, 512), keep_ratio=False),
    dict(type='PackSegInputs'),
]
cocostuff27_test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='COCOStuff27Dataset',
        fine_labels=True,
        data_root='data/coco_stuff164k',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        ann_file='curated/val2017/Coco164kFull_Stuff_Coarse_7.txt',
        pipeline=cocostuff27_protocol_pipeline))
