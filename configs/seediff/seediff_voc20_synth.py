# SeeDiff, synthetic PASCAL VOC: 512x512 images of one of the 20 VOC object classes each (the paper
# trains on 60k = 3000 per class), mask indices in VOC's 21-class order (background 0). Released
# settings of BAIKLAB SeeDiff (src/seediff_app.py; docs: ALGORITHMS.md 2.1-2.4): SD 1.4 fp32, 50
# steps, CFG 7, attention averaged over all steps (conditional half), Otsu seeds, 16 -> 32 -> 64
# expansion, threshold 0.3, PAMR 5000 iterations (dilation 1, 0.2 sigma), output minmax(PAMR) > 0.8.
#   python tools/synthesize.py --classes voc --config configs/seediff/seediff_voc20_synth.py \
#       --prompt "a photo of a {}" --images-per-class 100 --out work_dirs/synth_voc
custom_imports = dict(imports=['mmdiffseg'], allow_failed_imports=False)
model_id = 'CompVis/stable-diffusion-v1-4'
classes = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
           'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
           'sheep', 'sofa', 'train', 'tvmonitor')
generator = dict(
    type='SeeDiff',
    classes=classes,
    # the released app's prompt; its CLI script uses 'A long shot of a {}'
    prompt_templates=['a photo of a {}'],
    steps=50,
    guidance_scale=7.0,
    seed_rule='otsu',          # 'alpha': the paper's fixed seed threshold
    alpha=0.5,
    threshold=0.3,             # app 0.3 (paper beta = 0.3); the CLI script used 0.5
    final_threshold=0.8,
    pamr_iter=5000,
    pamr_dilations=[1],
    pamr_sigma_factor=0.2,
    pamr_tol=None,             # exact released iteration count
    flat_layer_var=1e-4,       # on the head-summed 16x16 layer map
    num_heads=8,               # SD 1.4 has 8 heads per layer
    # Class names are prompted as written ('pottedplant' -> CLIP tokens pot/ted/plant). Which
    # tokens are read, as offsets from the name's first token: SeeDiff's default, the released
    # rules (seediff.RELEASED_TOKEN_OFFSETS: [0] except pot + plant; tv + the END token; 'ing' of
    # din/ing/table), written out here. The intended words of the last two would be
    # token_offsets=dict(pottedplant=[0, 2], tvmonitor=[0, 1], diningtable=[2]).
    token_offsets=dict(pottedplant=[0, 2], tvmonitor=[0, 2], diningtable=[1]),
)
