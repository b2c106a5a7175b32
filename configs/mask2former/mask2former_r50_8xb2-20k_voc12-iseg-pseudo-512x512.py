# Weakly supervised VOC in two stages: iSeg pseudo labels of the aug images made offline by
# tools/pseudo_label.py (command: docs/data.md), then Mask2Former R50 trained on them;
# validated on real VOC 2012 val. The synthetic-only config with the pseudo-label training set.
_base_ = ['./mask2former_r50_8xb2-20k_voc12-seediff-synthetic-512x512.py']

train_dataloader = {{_base_.voc_pseudo_train_dataloader}}
