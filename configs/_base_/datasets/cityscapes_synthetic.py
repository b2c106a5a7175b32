# Synthetic Cityscapes pairs (SeeDiff's setting) written by tools/synthesize.py with the classes
# background, human, vehicle: data/synthetic/cityscapes_seediff/{JPEGImages, SegmentationClass,
# ImageSets/Segmentation/train.txt, manifest.jsonl}. Validation: real Cityscapes val
# (data/cityscapes, mmseg layout, labelTrainIds) grouped into the same three classes.
cityscapes_synthetic_root = 'data/synthetic/cityscapes_seediff'
cityscapes_synthetic_crop = (512, 512)
cityscapes_synthetic_train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='SyntheticCityscapesDataset',
        data_root=cityscapes_synthetic_root,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='RandomResize', scale=(1024, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
            dict(type='RandomCrop', crop_size=cityscapes_synthetic_crop, cat_max_ratio=0.75),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PhotoMetricDistortion'),
            dict(type='PackSegInputs'),
        ]))
cityscapes_human_vehicle_val_dataloader = dict(
    dataset=dict(type='CityscapesHumanVehicleDataset'))
