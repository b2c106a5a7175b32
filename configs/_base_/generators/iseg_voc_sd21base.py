# iSeg (released WSSS VOC settings) on Stable Diffusion 2.1-base, for labels made online during
# training. `sd_model` is a hub id or a local diffusers folder; the cache folder is tied to the
# model + generator config (a different config needs a different `cache_dir`).
sd_model = 'stabilityai/stable-diffusion-2-1-base'
label_generator = dict(type='ISeg', vocabulary='voc')
label_cache = dict(
    cache_dir='work_dirs/label_cache/iseg_voc_sd21base',
    model=sd_model,
    generator=label_generator)
