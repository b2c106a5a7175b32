# DiffSeg as in the released demo notebook (google/diffseg diffseg.ipynb; docs: ALGORITHMS.md 1.4):
# KL thresholds 0.9 x3 and k-means refinement of the merged proposals. With `classes` (and class
# names per image) the segments are named from the class tokens' cross-attention; leave it out for
# unlabelled segment ids.
custom_imports = dict(imports=['mmdiffseg'], allow_failed_imports=False)
model_id = 'CompVis/stable-diffusion-v1-4'
generator = dict(
    type='DiffSeg',
    kl_thresholds=(0.9, 0.9, 0.9),
    num_points=16,
    refine=True,
    resolutions=(64, 32, 16, 8),
    timestep=300,
    output_size=(512, 512),
)
