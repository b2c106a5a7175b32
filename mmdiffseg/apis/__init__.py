"""Offline generation: the functions behind tools/synthesize.py, pseudo_label.py, segment.py and
eval_labels.py (resumable jobs writing VOC-style folders with a manifest)."""
from .eval_labels import evaluate_labels, evaluate_segments
from .io import JobInterrupted, JobStopped, JobSummary, OutputWriteError, UserInputError
from .pseudo_label import pseudo_label
from .segment import segment
from .synthesize import synthesize
from .visualize import Overlayer, contact_sheet

__all__ = ['synthesize', 'pseudo_label', 'segment', 'evaluate_labels', 'evaluate_segments',
           'contact_sheet', 'Overlayer', 'JobSummary', 'JobInterrupted', 'UserInputError',
           'OutputWriteError', 'JobStopped']
