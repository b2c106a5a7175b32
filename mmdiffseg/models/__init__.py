"""The GPU side inside training and testing (registered in mmseg ``MODELS``; the label
pictures hooks and the checkpoint check in ``HOOKS``), and a Mask2Former head that ignores unsure
pixels."""
from .checkpoint_fit_hook import CheckpointFitHook, CheckpointMismatch
from .label_visualization_hook import ModelInputVisualizationHook, OnlineLabelVisualizationHook
from .online_labeler import AttentionLabeler, OnlineLabeler
from .preprocessor import DiffusionLabelPreprocessor
from .segmentor import DiffusionSegmentor
from .unsure_pixels_head import UnsurePixelsIgnoredMask2FormerHead

__all__ = ['AttentionLabeler', 'CheckpointFitHook', 'CheckpointMismatch', 'OnlineLabeler',
           'DiffusionLabelPreprocessor', 'DiffusionSegmentor',
           'ModelInputVisualizationHook', 'OnlineLabelVisualizationHook',
           'UnsurePixelsIgnoredMask2FormerHead']
