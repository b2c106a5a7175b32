# iSeg, WSSS pseudo-labels, ADE20K's 150 classes. NOT a released setting (iSeg has no ADE20K task):
# ISEG_PRESETS['wsss_ade20k'], the released many-class WSSS COCO settings (all heads, entropy 0.1,
# score threshold 0.45: a pixel below it is unsure, 255) with ADE20K's names and no
# background-context words (COCO's ground, wall, sky, tree ... are ADE20K classes).
#   python tools/pseudo_label.py data/ade/ADEChallengeData2016/images/training --classes ade20k \
#       --labels data/ade/ADEChallengeData2016/image_labels.json \
#       --config configs/iseg/iseg_wsss_ade20k.py --out data/pseudo_labels/ade20k_iseg
_base_ = ['./iseg_wsss_coco.py']
generator = dict(preset='wsss_ade20k', vocabulary='ade20k', bg_context='')
