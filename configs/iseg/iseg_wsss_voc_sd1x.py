# iSeg, WSSS pseudo-labels, PASCAL VOC 2012, on SD 1.x (v1-4 here; v1-5 has the same layout: pass it
# with --model). NOT a released setting: our adaptation (ISEG_PRESETS['wsss_voc_sd1x']). The released
# VOC head lists index SD 2.1-base's heads (20 per 16x16 layer, 10 per 32x32 layer, 5 in the 64x64
# self-attention layer); SD 1.x has 8 heads in every layer, so both head selections become the mean
# of all heads, as the released COCO / Context presets already do for the cross-attention. Every
# other setting is the released WSSS VOC one.
_base_ = ['./iseg_wsss_voc.py']
model_id = 'CompVis/stable-diffusion-v1-4'
generator = dict(preset='wsss_voc_sd1x', cross_heads=None, self_heads=None)
