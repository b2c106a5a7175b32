# SeeDiff, synthetic Cityscapes "human" and "vehicle" (the paper's Cityscapes setting, evaluated as
# human / vehicle IoU on Cityscapes val; ALGORITHMS.md 2.5). The released code has no Cityscapes
# script: the prompts below are ours (street scenes, the class word as written, so the generator
# finds its token). Everything else is the released VOC setting (seediff_voc20_synth.py).
#   python tools/synthesize.py --classes cityscapes \
#       --config configs/seediff/seediff_cityscapes_human_vehicle_synth.py \
#       --prompt "a photo of a {} on a city street" --prompt "a photo of a {} in a city" --out DIR
custom_imports = dict(imports=['mmdiffseg'], allow_failed_imports=False)
model_id = 'CompVis/stable-diffusion-v1-4'
classes = ('background', 'human', 'vehicle')
generator = dict(
    type='SeeDiff',
    classes=classes,
    prompt_templates=['a photo of a {} on a city street', 'a photo of a {} in a city'],
    steps=50,
    guidance_scale=7.0,
    seed_rule='otsu',
    alpha=0.5,
    threshold=0.3,
    final_threshold=0.8,
    pamr_iter=5000,
    pamr_dilations=[1],
    pamr_sigma_factor=0.2,
    pamr_tol=None,
    flat_layer_var=1e-4,
    num_heads=8,
)
