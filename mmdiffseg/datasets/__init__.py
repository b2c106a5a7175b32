"""mmseg transforms and datasets for training on generated labels (registered on import)."""
from .class_names import DATASET_CLASSES, resolve_classes
from .generated import (GeneratedLabelDataset, PseudoLabelADE20KDataset,
                        PseudoLabelCityscapesDataset, PseudoLabelDataset, PseudoLabelVOCDataset,
                        SyntheticADE20KDataset, SyntheticCityscapesDataset, SyntheticDataset,
                        SyntheticVOCDataset)
from .label_cache import LabelCache
from .label_files import label_key
from .transforms import LoadImageLevelLabels, LoadPseudoLabel, PackPseudoLabelInputs
from .unsupervised import (CenterSquareCrop, Cityscapes27Dataset, CityscapesHumanVehicleDataset,
                           COCOStuff27Dataset, LoadImageTFDecode, ResizeHalfPixelLabels)

__all__ = [
    'DATASET_CLASSES', 'resolve_classes', 'GeneratedLabelDataset', 'PseudoLabelADE20KDataset',
    'PseudoLabelCityscapesDataset', 'PseudoLabelDataset', 'PseudoLabelVOCDataset',
    'SyntheticADE20KDataset', 'SyntheticCityscapesDataset', 'SyntheticDataset',
    'SyntheticVOCDataset', 'LabelCache', 'label_key', 'LoadImageLevelLabels', 'LoadPseudoLabel',
    'PackPseudoLabelInputs', 'Cityscapes27Dataset', 'CityscapesHumanVehicleDataset',
    'COCOStuff27Dataset', 'CenterSquareCrop', 'ResizeHalfPixelLabels', 'LoadImageTFDecode'
]
