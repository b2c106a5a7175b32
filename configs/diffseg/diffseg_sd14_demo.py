# DiffSeg as in the released demo notebook (google/diffseg diffseg.ipynb; docs: ALGORITHMS.md 1.4):
# KL thresholds 0.9 x3 and k-means refinement of the merged proposals. With `classes` (and class
# names per image) the segments are named from the class tokens' cross-attention; leave it out for
# unlabelled segment ids.
_base_ = ['./diffseg_sd14_cityscapes.py']
generator = dict(refine=True)
