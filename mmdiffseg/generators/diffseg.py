"""DiffSeg (Tian et al., CVPR 2024): segments by merging self-attention maps under symmetric KL.

Follows the released code (google/diffseg @77ea596, ``diffseg/segmentor.py``; ALGORITHMS.md
section 1) step by step, vectorised:

1. ``aggregate_weights``: per resolution, key axes bilinearly upsampled to the finest grid and
   renormalised, query axes repeated (nearest), weighted by ``r / sum(r)`` (paper Eq. 1-2).
2. ``generate_sampling_grid`` + ``mask_merge`` iteration 0: 16x16 anchors; each anchor's proposal is
   the mean of the pixel maps within symmetric KL ``tau_0`` (paper Eq. 3), all anchors at once as
   two matrix products.
3. ``mask_merge`` iterations 1..N-1: greedy merging of proposals in order (already merged ones stay
   candidates), one KL matrix per iteration.
4. Optional k-means refinement initialised with the proposals (``refine``, as sklearn's KMeans).
5. ``generate_masks``: proposals bilinearly upsampled to the output size, argmax ("NMS")
   (:mod:`.diffseg_masks`). A pixel's segment id is its winning proposal's index, as released: a
   proposal that wins no pixel leaves its id unused, and the released per-image Hungarian matching
   (:mod:`~mmdiffseg.evaluation.unsupervised_metric`) takes the ids as its columns, so the gaps
   change which classes are charged the left-over segments. Labelled mode numbers the segments
   ``0..n-1`` before naming them.

Merge precision (``merge_precision``), the one step where the two modes differ:

* ``'float16'`` (default, the release: the published numbers come from it): iteration 0 casts
  anchors and maps to float16 and takes ``log(a) - log(b)`` without epsilon. Aggregated maps hold
  entries below float16's range, which become 0; ``0 * log 0`` is NaN and ``NaN < tau`` is false, so
  an anchor whose map has a float16 zero matches nothing (not even itself) and its proposal is
  dropped, and a pixel whose map has one joins no proposal (it still gets a segment from the
  argmax). Downstream as released: the empty proposals (the release's ``0 / 0`` NaN rows) match
  nothing in the later passes and are skipped, so only the kept anchors' proposals are merged,
  refined and compete in the argmax; the later passes see maps whose entries are all at least
  float16's smallest value, where the release's float64 KL and our float32 one agree. Where the
  release would fail or read NaN we do the sensible thing: an image whose every anchor is dropped
  (the release raises on the empty proposal list) gets ``ignore_index`` everywhere, with a warning;
  with a single threshold (no later pass) the empty proposals are dropped before the argmax.
  The float16 cast and the zero test are deterministic on any device; the distances are evaluated
  from the float16-rounded maps as matrix products in float32, and the 4096 pairs nearest the
  threshold again term by term in float16 as the release sums them (the two forms differ by a few
  float16 ulps, which decided some pairs near the threshold otherwise, nearly all as matches).
* ``'float32'``: guarded logs (``log(max(x, 1e-8))``), every anchor kept, each matching itself.

Labelled mode (``classes`` given; each image's class names then required): the prompt names the
present classes and each segment takes a class from their cross-attention: class-token maps averaged
over the cross-attention resolutions with equal weights and upsampled to the output size (rows of
the captured maps already sum to one over the 77 tokens, the released per-pixel normalisation), and
a segment is named after the class it stands out for against that class's background level, or is
background (:mod:`.segment_naming`, where the released ``get_semantics`` names every mask with its
best caption noun).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from ..attention.maps import AttentionMaps, CaptureRequest, CaptureSpec
from ..options import check_choice, check_flag, check_real, check_reals, check_whole, check_wholes
from ..registry import MASK_GENERATORS
from ..transfer import host_to_device, padded_table
from .base import IGNORE_INDEX, MaskGenerator
from .diffseg_first_pass import (FIRST_PASS_IMAGES, FirstPass, aggregate_self_attention,
                                 anchor_grid, anchor_proposals, grid_side, images_of)
from .diffseg_masks import compact_ids, segments_from_proposals
from .diffseg_merge import keep_matched, merge_pass, merge_proposals, refine_proposals
from .segment_naming import batch_segment_classes

__all__ = ['DiffSeg', 'aggregate_self_attention', 'anchor_grid', 'anchor_proposals',
           'merge_proposals', 'segments_from_proposals', 'compact_ids']

MERGE_PRECISIONS = ('float16', 'float32')


@MASK_GENERATORS.register_module()
class DiffSeg(MaskGenerator):
    """DiffSeg: unsupervised segment ids from self-attention, or class labels with class names.

    Args:
        kl_thresholds: symmetric-KL threshold of each merging iteration (the number of iterations);
            released: 1.1 x3 on COCO-Stuff-27, 0.9 x3 on Cityscapes and in the demo.
        num_points: anchors per side of the grid (16 -> 256 anchors).
        refine: k-means refinement of the proposals (released demo: True, benchmarks: False).
        resolutions: self-attention resolutions to aggregate; the largest is the merging grid.
        resolution_weights: aggregation weights, summing to 1; ``None`` = ``r / sum(r)`` as
            released.
        cross_resolutions: cross-attention resolutions used to name segments (labelled mode).
        min_contrast: labelled mode: how many times its class's background level a segment's
            mean class attention must reach to be named (:mod:`.segment_naming`).
        output_size: ``(H, W)`` the labels are made at (``labels_at`` then resizes them to
            each requested size, nearest); ``None`` = the proposals upsampled to each image's
            own size (``forward``: the images', else the maps' image size), as released.
        timestep: U-Net timestep of the single forward pass (released: 300, no noise).
        classes: dataset class names for the labelled mode (class names required at every
            call); ``None`` = unsupervised mode (segment ids, class names ignored).
        merge_precision: ``'float16'`` the released first merging pass (anchors whose maps
            underflow float16 are dropped), ``'float32'`` guarded logs (every anchor kept); see
            the module docstring.
        postprocess_backend: how the aggregation and the first merging pass run (same
            numbers): ``'torch'`` eagerly, ``'graph'`` from CUDA graphs, ``'auto'`` graphs on
            CUDA for small batches (:mod:`.diffseg_first_pass`).
        ignore_index: label of unsure pixels (every anchor dropped); never a segment id.
    """

    method = 'diffseg'

    def __init__(self, kl_thresholds: Sequence[float] = (1.1, 1.1, 1.1), num_points: int = 16,
                 refine: bool = False, resolutions: Sequence[int] = (64, 32, 16, 8),
                 resolution_weights: Optional[Sequence[float]] = None,
                 cross_resolutions: Sequence[int] = (64, 32, 16, 8),
                 min_contrast: float = 2.0, output_size: Optional[Sequence[int]] = None,
                 timestep: int = 300, classes: Optional[Sequence[str]] = None,
                 merge_precision: str = 'float16', postprocess_backend: str = 'auto',
                 ignore_index: int = 255):
        super().__init__(classes=classes, ignore_index=ignore_index)
        self.merge_precision = check_choice(
            'DiffSeg', 'merge_precision', merge_precision, MERGE_PRECISIONS,
            "'float16': the released first merging pass, 'float32': guarded logs")
        self.first_pass = FirstPass(postprocess_backend)
        owner = 'DiffSeg'
        self.kl_thresholds = check_reals(owner, 'kl_thresholds', kl_thresholds, '[1.1,1.1,1.1]',
                                         low=0, low_open=True)
        self.refine = check_flag(owner, 'refine', refine)
        self.resolutions = check_wholes(owner, 'resolutions', resolutions, '[64,32,16,8]', low=1)
        self.cross_resolutions = check_wholes(owner, 'cross_resolutions', cross_resolutions,
                                              '[64,32,16,8]', low=1)
        for name, values in (('resolutions', self.resolutions),
                             ('cross_resolutions', self.cross_resolutions)):
            if len(set(values)) != len(values):  # one map counted twice, its weight doubled
                raise ValueError(f'DiffSeg: {name} {list(values)} names a resolution more than '
                                 'once; list each once, e.g. [64,32,16,8]')
        self.min_contrast = check_real(owner, 'min_contrast', min_contrast, low=1)
        self.output_size = None if output_size is None else check_wholes(
            owner, 'output_size', output_size, '[512,512]', low=1)
        if self.output_size is not None and len(self.output_size) != 2:
            raise ValueError(f'DiffSeg: output_size must be [height, width] or None, got '
                             f'{output_size!r}')
        self.timestep = check_whole(owner, 'timestep', timestep, low=0)
        if not self.kl_thresholds:
            raise ValueError('DiffSeg.kl_thresholds must hold at least one threshold')
        if not self.resolutions:
            raise ValueError('DiffSeg.resolutions must hold at least one resolution')
        self.grid_size = max(self.resolutions)
        if any(self.grid_size % r for r in self.resolutions):
            raise ValueError(f'DiffSeg.resolutions {self.resolutions} must all divide the largest')
        self.num_points = check_whole(owner, 'num_points', num_points, 2, self.grid_size)
        if self.classes is not None and not self.cross_resolutions:
            raise ValueError('DiffSeg.cross_resolutions must not be empty when `classes` is set '
                             '(segments are named from cross-attention)')
        if resolution_weights is None:
            total = sum(self.resolutions)
            resolution_weights = [r / total for r in self.resolutions]
        self.resolution_weights = check_reals(owner, 'resolution_weights', resolution_weights,
                                              '[0.5,0.25,0.125,0.125]', low=0)
        if len(self.resolution_weights) != len(self.resolutions):
            raise ValueError(f'DiffSeg.resolution_weights has {len(self.resolution_weights)} '
                             f'entries for {len(self.resolutions)} resolutions')
        if not any(self.resolution_weights):
            raise ValueError('DiffSeg: resolution_weights are all 0, so no map is aggregated; '
                             'weight at least one resolution (None: r / sum(r), as released)')
        total = sum(self.resolution_weights)
        if abs(total - 1) > 1e-3:  # the KL of maps scaled by s is s x theirs: thresholds / s
            scaled = ','.join(f'{w / total:.4g}' for w in self.resolution_weights)
            raise ValueError(f'DiffSeg: resolution_weights must sum to 1, so that the aggregated '
                             f'maps are distributions, whose KL distances kl_thresholds measure; '
                             f'got {list(resolution_weights)} (sum {total:g}): pass '
                             f'resolution_weights=[{scaled}]')

    # -- what the engine must do -------------------------------------------------------------
    def check_device(self, device: torch.device) -> None:
        self.first_pass.check_device(device)

    @property
    def capture_spec(self) -> CaptureSpec:
        """Self-attention of every layer at each of ``resolutions``, averaged over the layers
        of a resolution and the heads (ALGORITHMS.md 1.1-1.2: all 16 SD 1.x self-attention
        layers, as released); in labelled mode also the cross-attention at
        ``cross_resolutions`` (the release's semantic-label demo)."""
        requests = [CaptureRequest('self', r) for r in self.resolutions]
        if self.classes is not None:
            requests += [CaptureRequest('cross', r) for r in self.cross_resolutions]
        return CaptureSpec(tuple(requests))

    def _labelled(self, class_names) -> bool:
        """Labelled mode (``classes`` set), which needs each image's class names."""
        if self.classes is not None and class_names is None:
            raise ValueError("DiffSeg was built with `classes` (labelled mode): pass the class "
                             "names in each image, one list per image (e.g. [['dog'], ['cat']]), "
                             'or build it without `classes` for unlabelled segment ids')
        return self.classes is not None

    def _named_classes(self, names: Sequence[str]) -> List[str]:
        """The class names that get a prompt token (all but background), validated."""
        self.class_indices(names)
        return [n for n in names if n != 'background']

    def extract_kwargs(self, class_names: Optional[Sequence[Sequence[str]]] = None) -> Dict:
        """Unsupervised: the empty prompt (released). Labelled: ``'a photo of {c1} and {c2}'``."""
        kwargs = dict(prompts=None, class_names=None, timestep=self.timestep, noise=None)
        if self._labelled(class_names):
            named = [self._named_classes(names) for names in self.name_lists(class_names)]
            kwargs['class_names'] = named
            kwargs['prompts'] = ['a photo of ' + ' and '.join(n) if n else '' for n in named]
        return kwargs

    # -- labels ------------------------------------------------------------------------------
    def proposals(self, maps: AttentionMaps, samples: Sequence[int]
                  ) -> Tuple[List[torch.Tensor], List[Optional[torch.Tensor]]]:
        """Merged (and optionally refined) proposals ``(K_b, size*size)`` of the ``samples``, and
        which of them compete in the argmax (``None``: all); ``K_b`` may be 0 in the released
        precision (every anchor dropped). A host sync per merging pass, not per image."""
        device = maps[f'self{self.grid_size}'].device
        anchors = anchor_grid(self.num_points, self.grid_size, device=device)
        attns, first = [], []
        for start in range(0, len(samples), FIRST_PASS_IMAGES):
            group = list(samples[start:start + FIRST_PASS_IMAGES])
            group_maps = [images_of(maps[f'self{r}'], group) for r in self.resolutions]
            if self.refine:  # the refinement reads the aggregated maps too: eagerly
                attn = aggregate_self_attention(group_maps, self.resolution_weights,
                                                self.grid_size)
                found = anchor_proposals(attn, anchors, self.kl_thresholds[0],
                                         self.merge_precision)
                attns += [attn[i] for i in range(len(group))]
            else:
                graphed = self.first_pass.graphed(group_maps[self.resolutions.index(
                    self.grid_size)])
                found = self.first_pass(group_maps, self.resolution_weights, self.grid_size,
                                        anchors, self.kl_thresholds[0], self.merge_precision,
                                        graphed)
            first += [found[i] for i in range(len(group))]
        # released: the NaN proposal of an anchor that matched nothing is NaN against every
        # proposal in the later passes (itself included), so it joins none and is skipped when
        # its turn comes; without later passes we drop it too (the release's argmax would read
        # NaN). float32: never empty, each anchor matches itself.
        proposals = keep_matched(first)
        for threshold in self.kl_thresholds[1:]:
            proposals = merge_pass(proposals, threshold)
        kept = [None] * len(proposals)
        refined = [i for i, p in enumerate(proposals) if self.refine and len(p)]
        if refined:  # released: the means of the final clusters, empty ones dropped
            means, nonempty = refine_proposals([attns[i] for i in refined],
                                               [proposals[i] for i in refined])
            for i, mean, keep in zip(refined, means, nonempty):
                proposals[i], kept[i] = mean, keep
        return proposals, kept

    def segment_ids(self, maps: AttentionMaps, samples: Sequence[int],
                    sizes: Sequence[Tuple[int, int]], skip: Optional[int] = None
                    ) -> Tuple[List[int], List[torch.Tensor], List[int]]:
        """The samples that keep a proposal, their segment ids (each ``(H, W)`` at its sample's
        ``sizes[i]``: each pixel's winning proposal index, as released; ids of proposals that win
        nowhere unused; ``skip``: an id that would be ``skip`` or more is one more, and a sample
        with more than 255 proposals numbers the ids it uses ``0..n-1``, so that a uint8 map
        holds them; a 256th used segment has no id left beside ``skip`` and is ``skip``) and
        their proposal counts."""
        g = self.grid_size
        ids, counts, found = [], [], []
        for b, size, proposals, kept in zip(samples, sizes, *self.proposals(maps, samples)):
            if not len(proposals):
                print_log(f'DiffSeg: no anchor of sample {b} matched a pixel in the released '
                          "first merging pass (merge_precision='float16': an anchor whose map "
                          'holds a float16 zero matches nothing), so no proposal is left (the '
                          'released code fails here); its pixels are left unsure '
                          f"({self.ignore_index}). merge_precision='float32' keeps every anchor.",
                          logger='current', level=logging.WARNING)
                continue
            segments = segments_from_proposals(proposals.view(-1, g, g), tuple(size), kept)
            last = None  # the 256th used segment's pixels: no uint8 id left beside skip
            if skip is not None and len(proposals) > IGNORE_INDEX:  # ids up to len: no uint8
                segments = compact_ids(segments[None], len(proposals))[0]
                last = segments == IGNORE_INDEX
                unsure = int(last.sum())  # a host sync, on this rare path only
                print_log(f'DiffSeg: sample {b} has {len(proposals)} proposals, more ids than a '
                          f'uint8 label map holds beside ignore_index={skip}: its segment ids '
                          'are the used ones numbered 0..n-1 in proposal order (released: the '
                          'proposal indices)'
                          + (f'; 256 are used, so the last one (pixels: {unsure}) is left unsure '
                             f'({skip})' if unsure else '')
                          + '; fewer proposals: raise kl_thresholds',
                          logger='current', level=logging.WARNING)
            if skip is not None and len(proposals) > skip:  # ids < proposals
                segments = segments + (segments >= skip).long()
            if last is not None:
                segments = segments.masked_fill(last, skip)
            ids.append(segments)
            counts.append(len(proposals))
            found.append(b)
        return found, ids, counts

    def labels_at(self, maps: AttentionMaps, images: Optional[torch.Tensor],
                  class_names: Optional[Sequence[Sequence[str]]],
                  sizes: Sequence[Tuple[int, int]]) -> List[torch.Tensor]:
        """Unsupervised segments at each size: the proposals bilinearly upsampled to it and the
        argmax there (``generate_masks`` at the label's size); labelled mode and a fixed
        ``output_size`` resize the labels (the base class)."""
        if self.output_size or self._labelled(class_names):
            return super().labels_at(maps, images, class_names, sizes)
        self.check_sizes(maps, sizes)
        maps.check_finite()
        found, ids, _ = self.segment_ids(maps, range(maps.batch_size), sizes, self.ignore_index)
        segments = dict(zip(found, ids))
        device = maps[f'self{self.grid_size}'].device
        return [segments[b] if b in segments else
                torch.full(tuple(size), self.ignore_index, dtype=torch.long, device=device)
                for b, size in enumerate(sizes)]

    def class_scores(self, columns: Sequence[torch.Tensor], size: Tuple[int, int]
                     ) -> torch.Tensor:
        """``(B, C, H, W)`` class attention from the class-token columns ``(B, r*r, C)`` at each
        cross-attention resolution: upsampled and averaged (raw shares, not normalised)."""
        scores = 0
        for column in columns:
            side = grid_side(column.shape[1], f'cross-attention {tuple(column.shape)}')
            grid = column.transpose(1, 2).reshape(*column.shape[::2], side, side)
            scores = scores + F.interpolate(grid, size=size, mode='bilinear', align_corners=False)
        return scores / len(columns)

    def name_segments(self, maps: AttentionMaps, named: List[List[str]], found: List[int],
                      segments: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """The labels of samples ``found`` (``named``: every sample's prompt classes): each
        segment takes a class by contrast with the class's background level
        (:func:`~.segment_naming.batch_segment_classes`), or is background."""
        # copied before the host waits for the segment counts below
        class_ids, valid = padded_table([self.class_indices(named[b]) for b in found],
                                        segments.device)
        most = class_ids.shape[1]
        # float32 whatever the maps' dtype (stored half-precision maps): the segment means'
        # pixel counts and min-max floor vanish in float16
        columns = [images_of(maps.class_token_matrix(f'cross{r}', named), found)[..., :most]
                   .float() for r in self.cross_resolutions]
        counts = (segments.flatten(1).amax(1) + 1).tolist()  # one host sync for the batch
        which = batch_segment_classes(segments, self.class_scores(columns, size), counts,
                                      self.min_contrast, valid)
        labels = class_ids.gather(1, which.clamp_min(0).flatten(1)).view_as(which)
        return torch.where(which >= 0, labels, torch.full_like(which, self.background_index))

    def forward(self, maps: AttentionMaps, images: Optional[torch.Tensor] = None,
                class_names: Optional[Sequence[Sequence[str]]] = None) -> torch.Tensor:
        """Labels ``(B, H, W)`` at ``output_size`` or the images' size. Unlabelled (as
        released, ALGORITHMS.md 1.2-1.3): the segment ids of the merged proposals. Labelled
        (``classes``; an extension after the release's demo): each segment named by the
        cross-attention of the image's classes; an image naming no class is background, one
        left without a proposal is ``ignore_index``."""
        maps.check_finite()
        size = self.output_size or (tuple(images.shape[-2:]) if images is not None
                                    else tuple(maps.image_size))
        labelled = self._labelled(class_names)
        if labelled and len(class_names) != maps.batch_size:
            raise ValueError(f'DiffSeg: {len(class_names)} class-name lists for a batch of '
                             f'{maps.batch_size}')
        device = maps[f'self{self.grid_size}'].device
        samples = list(range(maps.batch_size))
        if labelled:  # a sample that names no class is all background
            named = [self._named_classes(names) for names in class_names]
            samples = [b for b in samples if named[b]]
        found, ids, counts = self.segment_ids(maps, samples, [size] * len(samples),
                                              None if labelled else self.ignore_index)
        ids = torch.stack(ids) if ids else None
        if found and labelled:  # segments numbered 0..n-1, for all images at once
            ids = self.name_segments(maps, named, found, compact_ids(ids, max(counts)), size)
        if len(found) == maps.batch_size:
            return ids
        # the others: unsure (no proposal left) or background (no class named)
        fill = [self.ignore_index if b in samples else self.background_index
                for b in range(maps.batch_size)]
        labels = host_to_device(fill, device)[:, None, None].repeat(1, *size)
        if found:
            labels.index_copy_(0, host_to_device(found, device), ids)
        return labels

    def config_dict(self) -> Dict:
        return dict(method=self.method, kl_thresholds=list(self.kl_thresholds),
                    num_points=self.num_points, refine=self.refine,
                    resolutions=list(self.resolutions),
                    resolution_weights=list(self.resolution_weights),
                    cross_resolutions=list(self.cross_resolutions),
                    min_contrast=self.min_contrast,
                    output_size=list(self.output_size) if self.output_size else None,
                    timestep=self.timestep, classes=self.classes,
                    merge_precision=self.merge_precision, ignore_index=self.ignore_index)
