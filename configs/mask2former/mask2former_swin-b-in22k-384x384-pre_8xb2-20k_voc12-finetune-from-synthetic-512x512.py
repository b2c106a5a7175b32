# Fine-tuning on real VOC 2012 (train_aug) from the synthetic-only run's checkpoint (SeeDiff's
# synthetic -> real setting): train the synthetic-only config of the same backbone first (its
# last checkpoint is load_from below) or point load_from at its checkpoint.
_base_ = ['./mask2former_swin-b-in22k-384x384-pre_8xb2-20k_voc12-seediff-synthetic-512x512.py']

train_dataloader = {{_base_.voc_real_train_dataloader}}
load_from = ('work_dirs/'
             'mask2former_swin-b-in22k-384x384-pre_8xb2-20k_voc12-seediff-synthetic-512x512/'
             'iter_20000.pth')
# its weights must fit this model and classes: another backbone's, or another class count's, is
# refused as it loads (mmengine would leave those weights random and train on)
custom_hooks = [dict(type='CheckpointFitHook')]
