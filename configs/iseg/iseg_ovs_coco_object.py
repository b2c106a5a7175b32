# iSeg, open-vocabulary segmentation, COCO-Object val 5k (released: TagCLIP image labels; README 38.4 mIoU).
# The released settings of linsun449/iseg.code (docs: ALGORITHMS.md section 3.6); the same values as
# mmdiffseg.generators.iseg.ISEG_PRESETS['ovs_coco_object'] (tests/generators/test_iseg.py checks they agree).
custom_imports = dict(imports=['mmdiffseg'], allow_failed_imports=False)
model_id = 'stabilityai/stable-diffusion-2-1-base'
generator = dict(
    type='ISeg',
    preset='ovs_coco_object',
    vocabulary='coco_object',
    prompt_template='a photograph of {classes} and other object and background{bg_context}',
    bg_context='ground, land, grass, tree, building, wall, sky, lake, water, river, sea, railway, ',
    cross_heads=None,
    iters=10,
    ent=0.2,
    cam_bg_thr=0.45,
    timestep=100,
    noise_seed=1101,
    token_enhance=1.6,
    res_weights={16: 0.7, 32: 0.3},
    self_heads=(1, 2),
    use_cluster=True,
    num_clusters=32,
    cluster_iters=20,
    mask_size=512,
)
