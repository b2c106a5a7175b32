"""The GPU side inside training and testing (registered in mmseg ``MODELS``)."""
from .online_labeler import OnlineLabeler
from .preprocessor import DiffusionLabelPreprocessor

__all__ = ['OnlineLabeler', 'DiffusionLabelPreprocessor']
