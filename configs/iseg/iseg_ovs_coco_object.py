# iSeg, open-vocabulary segmentation, COCO-Object val 5k (released: TagCLIP image labels; README 38.4 mIoU).
# Released settings (ALGORITHMS.md 3.6) = ISEG_PRESETS['ovs_coco_object']: WSSS COCO with the OVS prompt and ent 0.2.
_base_ = ['./iseg_wsss_coco.py']
generator = dict(
    preset='ovs_coco_object',
    prompt_template='a photograph of {classes} and other object and background{bg_context}',
    ent=0.2,
)
