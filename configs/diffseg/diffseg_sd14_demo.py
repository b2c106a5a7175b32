# DiffSeg as in the released demo notebook (google/diffseg diffseg.ipynb; docs: ALGORITHMS.md 1.4):
# KL thresholds 0.9 x3 and k-means refinement of the merged proposals, after the released float16
# first merging pass (merge_precision='float16', inherited: the demo ran the same code). With
# `classes` (and class names per image) the segments are named from the class tokens'
# cross-attention (each segment by its contrast with the class's background level,
# `min_contrast`); leave it out for unlabelled segment ids.
_base_ = ['./diffseg_sd14_cityscapes.py']
generator = dict(refine=True)
