# iSeg, open-vocabulary segmentation, PASCAL VOC 2012 val (released: TagCLIP image labels; README 68.6 mIoU).
# Released settings (ALGORITHMS.md 3.6) = ISEG_PRESETS['ovs_voc']: WSSS VOC with 8 iterations and the OVS script's
# prompt, which lacks the ', ' before the context words (kept: it is what was evaluated).
_base_ = ['./iseg_wsss_voc.py']
generator = dict(
    preset='ovs_voc',
    prompt_template='a photograph of {classes} and other object and background{bg_context}',
    iters=8,
)
