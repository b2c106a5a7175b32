# iSeg, open-vocabulary segmentation, PASCAL VOC 2012 val, on SD 1.x. NOT a released setting: the
# released OVS VOC settings with the mean of all heads (see iseg_wsss_voc_sd1x.py);
# = ISEG_PRESETS['ovs_voc_sd1x'].
_base_ = ['./iseg_ovs_voc.py']
model_id = 'CompVis/stable-diffusion-v1-4'
generator = dict(preset='ovs_voc_sd1x', cross_heads=None, self_heads=None)
