# iSeg for the random-weights tiny SD 2.1-base of the tests (mmdiffseg.attention.testing): its
# layers have fewer heads than SD, so cross-attention uses every head and self-attention head 0.
# The label cache's `model` must be set to the tiny pipeline folder (tests do).
tiny_label_generator = dict(type='ISeg', vocabulary='voc', cross_heads=None, self_heads=[0])
