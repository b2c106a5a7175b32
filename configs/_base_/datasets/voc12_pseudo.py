# PASCAL VOC 2012 aug images (10,582) with pixel labels made offline by tools/pseudo_label.py from
# the image-level labels (iSeg by default), validated on real VOC 2012 val. Make the labels with
# (images listed by the online config's aug split; a GPU machine, about 20 images/s on an H200):
#   python tools/pseudo_label.py \
#       --dataset-config configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py \
#       --split train --labels data/VOCdevkit/VOC2012/image_labels.json --classes voc \
#       --config configs/iseg/iseg_wsss_voc.py --device cuda --batch-size 8 \
#       --out data/pseudo_labels/voc12_iseg
# -> data/pseudo_labels/voc12_iseg/{SegmentationClass/<id>.png (palette, 255 unsure), manifest.jsonl}
_base_ = ['./voc12_synthetic.py']

voc_pseudo_root = 'data/pseudo_labels/voc12_iseg'
voc_pseudo_images = 'data/VOCdevkit/VOC2012'   # the VOC data root of voc12_iseg_online.py
voc_pseudo_train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='PseudoLabelVOCDataset',
        data_root='',
        data_prefix=dict(img_path=voc_pseudo_images + '/JPEGImages',
                         seg_map_path=voc_pseudo_root + '/SegmentationClass'),
        ann_file=voc_pseudo_images + '/ImageSets/Segmentation/aug.txt',
        pipeline={{_base_.voc_train_pipeline}}))
