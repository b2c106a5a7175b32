# DiffSeg, unsupervised segments on COCO-Stuff-27 (2,175 curated val2017 images, center square crop,
# 512x512; scored by per-image Hungarian matching). Released settings of google/diffseg
# (benchmarks.ipynb; docs: ALGORITHMS.md 1.4): SD v1.4, empty prompt, one U-Net pass at t=300
# without noise, all 16 self-attention layers (head and layer mean per resolution), KL thresholds
# 1.1 x3, 16x16 anchors, no k-means refinement, bilinear x8 + argmax.
custom_imports = dict(imports=['mmdiffseg'], allow_failed_imports=False)
model_id = 'CompVis/stable-diffusion-v1-4'
generator = dict(
    type='DiffSeg',
    kl_thresholds=(1.1, 1.1, 1.1),
    num_points=16,
    refine=False,
    resolutions=(64, 32, 16, 8),
    resolution_weights=None,   # r / sum(r): 8/15, 4/15, 2/15, 1/15
    timestep=300,
    # no output_size: the proposals are upsampled to each image's own size and the argmax taken
    # there (512 on the released 512x512 crops)
    # the released first merging pass: anchors and maps cast to float16, logs without epsilon, so
    # an anchor whose map has a float16 zero is dropped (and such a pixel joins no proposal). The
    # published numbers (COCO-Stuff-27 ACC 72.5 / mIoU 43.6, Cityscapes 76.0 / 21.2) come from this
    # behaviour; 'float32' (guarded logs, every anchor kept) is the numerically clean variant.
    merge_precision='float16',
)
