"""The GPU side inside training and testing (registered in mmseg ``MODELS``; the label
pictures hook in ``HOOKS``)."""
from .label_visualization_hook import ModelInputVisualizationHook, OnlineLabelVisualizationHook
from .online_labeler import AttentionLabeler, OnlineLabeler
from .preprocessor import DiffusionLabelPreprocessor
from .segmentor import DiffusionSegmentor

__all__ = ['AttentionLabeler', 'OnlineLabeler', 'DiffusionLabelPreprocessor', 'DiffusionSegmentor',
           'ModelInputVisualizationHook', 'OnlineLabelVisualizationHook']
