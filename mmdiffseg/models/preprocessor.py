"""``DiffusionLabelPreprocessor``: a ``SegDataPreProcessor`` that makes the training labels.

Mechanism (see :mod:`mmdiffseg.datasets.transforms`): ``LoadPseudoLabel`` loads the cached label
of each image as ground truth, or, on a cache miss, a map of source pixel indices that the
pipeline's geometric augmentations transform like a label. Before the usual normalisation and
padding, this preprocessor generates the labels of the missing *original* images on the model's
device (batched, in the main process), caches them, and gathers the augmented targets through the
index maps. Generating on the original image rather than on the augmented one makes the target of
an image the same function of its content in every epoch and run, and lets every later epoch load
it from disk at no GPU cost. The label cache, Stable Diffusion model and generator come with the
samples from ``LoadPseudoLabel(cache=...)``, the one place a config names them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from mmseg.models import SegDataPreProcessor
from mmseg.registry import MODELS

from .online_labeler import OnlineLabeler


@MODELS.register_module()
class DiffusionLabelPreprocessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` + online labels from Stable Diffusion attention.

    Args:
        engine_dtype: ``'float32'``, ``'float16'`` or ``'bfloat16'``.
        label_batch_size: images per engine call.
        engine_kwargs: extra ``DiffusionAttentionEngine.from_pretrained`` arguments.
        Other arguments: :class:`mmseg.models.SegDataPreProcessor`.
    """

    #: options of earlier versions, with where their settings went (the pre-flight names them)
    RETIRED_OPTIONS = {'label_cache': 'the label cache, model and generator are set once, in '
                                      'LoadPseudoLabel(cache=...) of the train pipeline'}

    def __init__(self, engine_dtype: str = 'float32', label_batch_size: int = 4,
                 engine_kwargs: Optional[Dict] = None, **kwargs):
        for key in set(kwargs) & set(self.RETIRED_OPTIONS):
            raise TypeError(f'DiffusionLabelPreprocessor: {key} is no longer an argument; '
                            f'{self.RETIRED_OPTIONS[key]}')
        super().__init__(**kwargs)
        self.labeler = OnlineLabeler(dtype=engine_dtype, batch_size=label_batch_size,
                                     engine_kwargs=engine_kwargs)

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        if training:
            self.labeler.label_batch(data['data_samples'], self.device)
        return super().forward(data, training)
