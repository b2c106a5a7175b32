# iSeg, open-vocabulary segmentation, PASCAL Context 59 val (released: TagCLIP image labels; README 30.9 mIoU).
# Released settings (ALGORITHMS.md 3.6) = ISEG_PRESETS['ovs_context']. Context 59 has no background class, so
# pixels the background score wins are labelled 255 (ignored, as mmseg's PascalContextDataset59 expects);
# the released score counts background as a 60th class (0), so it is not comparable with a 59-class mIoU.
# An image's classes are prompted in the released label order (VOC classes first: ISeg.class_order).
_base_ = ['./iseg_ovs_voc.py']
generator = dict(
    preset='ovs_context',
    vocabulary='context59',
    bg_context='',
    cross_heads=None,
    iters=5,
    ent=0.002,
)
