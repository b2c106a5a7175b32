# DiffSeg, unsupervised segments on Cityscapes-27 (all val frames, labelIds 7..33, center square
# crop, 512x512; scored by per-image Hungarian matching). Released settings of google/diffseg
# (benchmarks.ipynb; docs: ALGORITHMS.md 1.4): as on COCO-Stuff-27 but KL thresholds 0.9 x3; the same
# released float16 first merging pass (merge_precision='float16', see the base), which produced the
# published Cityscapes numbers.
_base_ = ['./diffseg_sd14_coco-stuff-27.py']
generator = dict(kl_thresholds=(0.9, 0.9, 0.9))
