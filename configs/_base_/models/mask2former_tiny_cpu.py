# A shrunk Mask2Former for CPU tests and smoke runs (as mmdet's own tests shrink it): ResNet-18
# with 16 base channels, 32-d transformer, 10 queries, 1 encoder / 3 decoder layers, 64 sampled
# points; about a second per step on one CPU core at 128x128. Merge into a stock config's model:
# `model = dict(backbone={{_base_.tiny_backbone}}, decode_head={{_base_.tiny_decode_head}})`.
tiny_channels = 32
tiny_backbone = dict(
    depth=18, stem_channels=16, base_channels=16,
    norm_cfg=dict(type='BN', requires_grad=True), init_cfg=None)
tiny_decode_head = dict(
    in_channels=[16, 32, 64, 128],
    feat_channels=tiny_channels,
    out_channels=tiny_channels,
    num_queries=10,
    pixel_decoder=dict(
        norm_cfg=dict(type='GN', num_groups=8),
        encoder=dict(
            num_layers=1,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=tiny_channels, num_heads=4),
                ffn_cfg=dict(embed_dims=tiny_channels, feedforward_channels=64))),
        positional_encoding=dict(num_feats=tiny_channels // 2)),
    positional_encoding=dict(num_feats=tiny_channels // 2),
    transformer_decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=tiny_channels, num_heads=4),
            cross_attn_cfg=dict(embed_dims=tiny_channels, num_heads=4),
            ffn_cfg=dict(embed_dims=tiny_channels, feedforward_channels=64))),
    train_cfg=dict(num_points=64))
tiny_crop_size = (128, 128)
# short CPU schedule: logs every iteration, one checkpoint at the end, no visualisation
tiny_train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=1000)
tiny_default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000, save_best=None,
                    save_last=True),
    visualization=dict(type='SegVisualizationHook', draw=False))
