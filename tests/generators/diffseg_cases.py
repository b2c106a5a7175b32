"""DiffSeg test cases: attention built from real ground truth (VOC, COCO-Stuff-27 samples) and the
scores used to judge segments (Hungarian-matched mIoU, class mIoU)."""
import json

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators.testing import attention_from_labels, load_label_png

VOC_CLASSES = ['background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
               'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor']
VOC_SAMPLES = ['voc_val_0', 'voc_val_114', 'voc_val_582']
# Synthetic self-attention of attention_from_labels is softmax((f_q + n_q).(f_k + n'_k) / T).
# The noise-noise term alone has std noise^2 * sqrt(feature_dim) / T in logits (2.3 at noise
# 0.2, T = 0.1, dim 32): from noise ~0.15 on every row is spiky on random keys and no two pixels
# fall within the KL thresholds. DiffSeg's working range on these maps is noise <= ~0.13;
# "moderate" is 0.1.
TEMPERATURE = 0.1
MODERATE_NOISE = 0.1


def fill_void(labels: torch.Tensor) -> torch.Tensor:
    """Void (255) pixels take their nearest labelled pixel's class, for building attention only:
    attention_from_labels gives void tokens noise-only features, and its nearest-neighbour
    sampling at 8x8 can turn a whole coarse cell into uniform attention. Scores still ignore
    them."""
    void = labels.numpy() == 255
    nearest = ndimage.distance_transform_edt(void, return_distances=False, return_indices=True)
    return torch.from_numpy(labels.numpy()[tuple(nearest)])


def hungarian_miou(pred: torch.Tensor, gt: torch.Tensor, min_fraction: float = 0.0) -> float:
    """Per-image Hungarian-matched mIoU over the ground-truth classes present (255 ignored);
    classes covering less than ``min_fraction`` of the image are ignored too."""
    gt, pred = gt.flatten().numpy(), pred.flatten().numpy()
    classes, counts = np.unique(gt[gt != 255], return_counts=True)
    classes = classes[counts >= min_fraction * gt.size]
    keep = np.isin(gt, classes)
    gt, pred = gt[keep], pred[keep]
    segments = np.unique(pred)
    conf = (gt[:, None] == classes[None]).T.astype(np.int64) @ (pred[:, None] == segments[None])
    rows, cols = linear_sum_assignment(conf, maximize=True)
    tp = np.zeros(len(classes))
    fp = np.zeros(len(classes))
    tp[rows] = conf[rows, cols]
    fp[rows] = conf[:, cols].sum(0) - tp[rows]
    fn = conf.sum(1) - tp
    return float(np.mean(tp / (tp + fp + fn)))


def class_miou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Plain mIoU over the ground-truth classes present (255 ignored)."""
    labelled = gt != 255
    ious = [((pred == c) & (gt == c)).sum() / (((pred == c) | (gt == c)) & labelled).sum()
            for c in gt[labelled].unique()]
    return float(torch.stack(ious).mean())


def voc_labels(shared_data, names=VOC_SAMPLES):
    return [load_label_png(shared_data('voc2012_val_samples', 'SegmentationClass', f'{n}.png'))
            for n in names]


def coco_samples(shared_data):
    root = shared_data('coco_val_samples')
    classes = json.loads((root / 'cocostuff27_classes.json').read_text())
    return classes, [load_label_png(p) for p in sorted(root.glob('*/cocostuff27_derived/*.png'))]


def synthetic(labels, classes, noise, seed=0, resolutions=(64, 32, 16, 8)):
    """Self- and cross-attention at ``resolutions`` for one ``(H, W)`` label map."""
    return attention_from_labels(fill_void(labels)[None], classes, noise=noise,
                                 temperature=TEMPERATURE, seed=seed,
                                 self_resolutions=resolutions, cross_resolutions=resolutions)


# -- the precision cases: a 32x32 merging grid keeps the released transcription fast ---------------
SMALL_GRID = (32, 16, 8)
SMALL_OUTPUT = (64, 64)
#: (VOC sample, noise): at 0.1 a few anchors underflow float16, at 0.2-0.25 nearly all
AGREEMENT_CASES = (('voc_val_0', 0.1), ('voc_val_582', 0.1), ('voc_val_0', 0.2),
                   ('voc_val_582', 0.2), ('voc_val_114', 0.25))


def case_maps(shared_data, name, noise):
    """Self-attention at :data:`SMALL_GRID` from a VOC sample's ground truth."""
    gt = voc_labels(shared_data, [name])[0]
    maps, _ = attention_from_labels(fill_void(gt)[None], VOC_CLASSES, noise=noise,
                                    temperature=TEMPERATURE, seed=0,
                                    self_resolutions=SMALL_GRID, cross_resolutions=())
    return maps


def with_hot_spot(maps, labels, name, factor, resolutions):
    """Multiply class ``name``'s token attention by ``factor`` on the object's pixels within a
    disk around its centroid (radius a quarter of its extent) at each cross-attention
    resolution, rows renormalised over the tokens: a hot spot ``factor`` times the rest."""
    for r in resolutions:
        ids = F.interpolate(fill_void(labels)[None, None].float(), size=(r, r),
                            mode='nearest')[0, 0].long().flatten()
        on = ids == VOC_CLASSES.index(name)
        y, x = torch.arange(r * r) // r, torch.arange(r * r) % r
        cy, cx = y[on].float().mean(), x[on].float().mean()
        radius = max(1.0, float(y[on].max() - y[on].min() + x[on].max() - x[on].min()) / 8)
        disk = on & ((y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2)
        cross = maps.maps[f'cross{r}'][0]
        tokens = maps.token_positions[0][name]
        cross[disk[:, None] & torch.isin(torch.arange(cross.shape[-1]), torch.tensor(tokens))] \
            *= factor
        maps.maps[f'cross{r}'][0] = cross / cross.sum(-1, keepdim=True)
    return maps


def uniform_maps(resolutions=(16, 8), batch=1):
    """Uniform self-attention at ``resolutions`` (one segment), for a 64x64 image."""
    return AttentionMaps({f'self{r}': torch.full((batch, r * r, r * r), 1.0 / (r * r))
                          for r in resolutions}, image_size=(64, 64))
