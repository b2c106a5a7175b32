# iSeg, WSSS pseudo-labels, COCO-Object 2014 (released: train2014, GT image labels; README 45.5 mIoU).
# Released settings (ALGORITHMS.md 3.6) = ISEG_PRESETS['wsss_coco']: the VOC ones with COCO's words, all heads,
# a stronger entropy reduction and a score threshold instead of the (1 - max)^2 background score.
_base_ = ['./iseg_wsss_voc.py']
generator = dict(
    preset='wsss_coco',
    vocabulary='coco_object',
    bg_context='ground, land, grass, tree, building, wall, sky, lake, water, river, sea, railway, ',
    cross_heads=None,
    ent=0.1,
    cam_bg_thr=0.45,
)
