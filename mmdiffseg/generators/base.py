"""The :class:`MaskGenerator` contract: attention maps in, label maps out.

A generator declares what it needs from the U-Net (:attr:`capture_spec`) and how the engine must run
(:meth:`extract_kwargs`: prompt, timestep, noise, class-token enhancement), then turns the captured
:class:`~mmdiffseg.attention.AttentionMaps` into labels with :meth:`forward`. Generators are pure
tensor code: they never load a model, run batched on CPU or GPU, and work from a config or
directly.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..attention.images import ImagesLike, check_value_range, given_as_float, image_list
from ..attention.maps import AttentionMaps, CaptureSpec
from ..names import nearest, repeated_names
from ..options import check_whole
from ..provenance import ABSENT

IGNORE_INDEX = 255

#: The version of how labels are computed from a given model + generator config, recorded in
#: label caches and tool manifests so labels of an older computation are never mixed with new
#: ones. 1: labels made at the working size, then resized by torch ``'nearest'``; DiffSeg ids
#: renumbered ``0..n-1``; SeeDiff's Otsu levels clipped at 255, its images rounded. 2: labels made
#: at each image's size (:meth:`MaskGenerator.labels_at`), DiffSeg ids = proposal indices,
#: SeeDiff's Otsu on unclipped levels and truncated images, as released. 3: every route resizes a
#: uint8 image to the working size as the tools' loaders do (OpenCV, uint8; the label cache's and
#: the Python API's were resized by torch in float), and noise is added by DDPM's forward process
#: whatever sampler the model's folder names. 4: iSeg's token enhancement multiplies float16
#: embeddings by 1.6 in float32 (as released; the factor was rounded to float16, 1.599609375);
#: DiffSeg's float16 first pass decides the pairs near the threshold with the release's sums.
LABELS_VERSION = 4
LABELS_VERSION_KEY = 'labels_version'


def older_labels_note(differing: Sequence[Tuple[str, object, object]]) -> str:
    """Sentences for a refused folder or cache whose labels an earlier mmdiffseg made, from its
    differing settings ``(key, folder's value, this run's)``: another :data:`LABELS_VERSION`, or
    iSeg labels of float32 maps from before ``map_precision`` (how to keep them)."""
    notes = []
    for key, have, _ in differing:
        if key == LABELS_VERSION_KEY:
            notes.append(f'\n{LABELS_VERSION_KEY}: its labels were made by an earlier mmdiffseg, '
                         'which computed them otherwise (mmdiffseg.generators.base.'
                         f'LABELS_VERSION), and are not mixed with version {LABELS_VERSION} '
                         'labels.')
        elif key.endswith('map_precision') and have == ABSENT:
            notes.append(f'\n{key}: its labels are iSeg\'s of float32 maps, made before float16 '
                         "maps (as released) became the default; to go on with them, set the "
                         "generator's map_precision='float32'.")
    return ''.join(notes)


def check_class_names(owner: str, classes: Sequence[str]) -> List[str]:
    """``classes`` as a non-empty list of distinct non-empty strings (a repeated name's second
    label could never be given: names are looked up by their first index; an empty list labels
    every pixel unsure; ``'Background'`` would be prompted as an object, not be the class of
    pixels of none)."""
    if isinstance(classes, str) or not all(isinstance(c, str) and c.strip() for c in classes):
        raise ValueError(f'{owner}: classes must be a list of class names (non-empty strings), '
                         f'got {classes!r}')
    if not len(classes):
        raise ValueError(f'{owner}: classes is empty, so every label would be unsure: list the '
                         "dataset's class names")
    repeated = repeated_names(classes)
    if repeated:
        raise ValueError(f'{owner}: classes names {repeated} more than once; each class needs '
                         'one name (its label is its index in the list)')
    other = [c for c in classes if c.strip().lower() == 'background' and c != 'background']
    if other:
        raise ValueError(f"{owner}: class {other[0]!r} is not spelled 'background', the class of "
                         "pixels of no object (else it is prompted as an object): write "
                         "'background'")
    return list(classes)


class MaskGenerator(torch.nn.Module):
    """Base class of the mask generators.

    Args:
        classes: the dataset's class names; output labels are indices into this list. A class named
            ``'background'`` receives the pixels a generator assigns to background; without one,
            background pixels get :data:`IGNORE_INDEX`. ``None`` only for generators that return
            unlabelled segment ids (DiffSeg without class names).
        ignore_index: label of pixels the generator is unsure about.
    """

    #: short name used in manifests and cache keys
    method: str = 'base'

    def __init_subclass__(cls, **kwargs):
        """A generator's options are checked, and some turned into helpers, in ``__init__``:
        once the outermost ``__init__`` of an instance returns, :meth:`__setattr__` refuses to
        change one (``iseg.iters = -1`` ran unchecked, ``iseg.postprocess_backend = 'graph'``
        did nothing)."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None:  # the inherited one is wrapped already
            return

        @functools.wraps(init)
        def init_then_settle(self, *args, **kw):
            depth = self.__dict__.get('_init_depth', 0)
            object.__setattr__(self, '_init_depth', depth + 1)
            try:
                init(self, *args, **kw)
            finally:
                object.__setattr__(self, '_init_depth', depth)
            if depth == 0:
                object.__setattr__(self, '_settled', True)
        cls.__init__ = init_then_settle

    def __setattr__(self, name: str, value) -> None:
        if self.__dict__.get('_settled') and name in _option_names(type(self)):
            owner = type(self).__name__
            raise AttributeError(
                f'{owner}.{name}: options are checked when the generator is built, so a change '
                f'afterwards would go unchecked or unused; build another: {owner}(..., '
                f'{name}={value!r}) (or the config entry of its type)')
        super().__setattr__(name, value)

    def __init__(self, classes: Optional[Sequence[str]] = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        owner = type(self).__name__
        self.classes = None if classes is None else check_class_names(owner, classes)
        self.ignore_index = check_whole(owner, 'ignore_index', ignore_index, 0, IGNORE_INDEX)
        if self.classes is not None and self.ignore_index < len(self.classes):
            raise ValueError(f'{owner}: ignore_index={self.ignore_index} is the label of class '
                             f'{self.classes[self.ignore_index]!r}; unsure pixels need a label of '
                             f'their own, from {len(self.classes)} to {IGNORE_INDEX} (default '
                             f'{IGNORE_INDEX})')

    # -- what the engine must do -------------------------------------------------------------
    @property
    def capture_spec(self) -> CaptureSpec:
        """The attention the generator reads (layers, resolutions, heads, per-layer or mean), as
        its release captures it; the engine captures nothing else."""
        raise self._undefined('capture_spec', 'return the CaptureSpec of the attention the '
                              'generator reads (the engine captures that only)')

    def extract_kwargs(self, class_names: Sequence[Sequence[str]]) -> Dict:
        """Keyword arguments for ``DiffusionAttentionEngine.extract`` for a batch whose samples
        contain ``class_names[b]`` (prompts, class names for token positions, timestep, noise,
        class-token enhancement). ``capture`` is added by the caller."""
        raise self._undefined('extract_kwargs()', 'return the keyword arguments of '
                              'DiffusionAttentionEngine.extract for a batch (prompts, timestep...)')

    def check_device(self, device: torch.device) -> None:
        """Raise ValueError, naming the setting and its fix, for a setting that cannot run on
        ``device`` (a CUDA-only backend or noise draw off CUDA): the tools ask before the model
        loads. Nothing by default."""

    def model_notes(self, layers: Sequence) -> List[str]:
        """Settings that do not fit the U-Net whose attention ``layers``
        (:class:`~mmdiffseg.attention.unet_layers.AttentionLayer`) it reads, each with its fix:
        the run can go on, but not as released. None by default."""
        return []

    # -- labels ------------------------------------------------------------------------------
    @property
    def background_index(self) -> int:
        if self.classes is not None and 'background' in self.classes:
            return self.classes.index('background')
        return self.ignore_index

    def class_indices(self, names: Sequence[str]) -> List[int]:
        """Dataset indices of ``names``; a clear error for a name not in :attr:`classes`."""
        owner = type(self).__name__
        if self.classes is None:
            raise ValueError(f'{owner} was built without `classes`, so class names '
                             f'{list(names)} cannot be mapped to label indices')
        if isinstance(names, str):
            raise ValueError(f'{owner}: class names {names!r} is a string; class names are one '
                             "list per image, e.g. [['dog', 'person'], ['cat']]")
        if not all(isinstance(n, str) for n in names):
            indices = all(isinstance(n, (int, np.integer)) for n in names)
            raise ValueError(f'{owner}: class names are strings from .classes, got {list(names)}'
                             + ('; for dataset indices pass [generator.classes[i] for i in '
                                'indices]' if indices else ''))
        missing = [n for n in names if n not in self.classes]
        if missing:
            near = {n: nearest(n, self.classes) for n in missing}
            hints = ''.join(f' ({n!r}: did you mean {m!r}?)' for n, m in near.items() if m)
            raise KeyError(f'{owner}: unknown class name(s) {missing}{hints}; '
                           f'known classes: {self.classes}')
        return [self.classes.index(n) for n in names]

    def name_lists(self, class_names) -> List[List[str]]:
        """``class_names`` checked to be one list of names per image."""
        if class_names is None or isinstance(class_names, str):
            raise ValueError(f'{type(self).__name__} needs class names, one list per image, e.g. '
                             f"[['dog', 'person'], ['cat']]; got {class_names!r}")
        return list(class_names)

    def __call__(self, maps: AttentionMaps, images: Optional[ImagesLike] = None,
                 class_names: Optional[Sequence[Sequence[str]]] = None
                 ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """:meth:`forward` on the images in any form ``engine.extract`` takes: a ``(B, C, H, W)``
        tensor (C = 3, or 1 / 4 converted; uint8 or float, 0..255) gives ``(B, H, W)`` labels;
        PIL images, ``HxWx3`` arrays or ``(3, H, W)`` tensors, alone or in a list (grey and RGBA
        converted), give a list of ``(H_b, W_b)`` labels, each at its image's size (images of
        one size are labelled together). Images given as floats holding NaN or inf are refused,
        as the engine refuses them (one host sync; their range is the engine's to judge: the
        labelling paths give a dark uint8 photo here as floats)."""
        if images is None:
            return super().__call__(maps, None, class_names)
        if isinstance(images, torch.Tensor) and images.ndim == 4:  # the tools' batches: no sync
            if images.shape[1] in (1, 4) and images.shape[0] == maps.batch_size:
                images = torch.stack(image_list(images))  # grey / RGBA, as the engine took them
            if images.shape[1] != 3 or images.shape[0] != maps.batch_size:
                raise ValueError(f'{type(self).__name__}: images must be (B, 3, H, W) RGB with '
                                 f'B={maps.batch_size} (the batch of the maps), got '
                                 f'{tuple(images.shape)}' + (
                                     '; for (B, H, W, 3) pass images.permute(0, 3, 1, 2)'
                                     if images.shape[-1] == 3 else ''))
            if images.is_floating_point():
                check_value_range(images, range(len(images)), finite_only=True)
                return super().__call__(maps, images, class_names)
            return super().__call__(maps, images.float(), class_names)
        rgb = image_list(images)
        if len(rgb) != maps.batch_size:
            raise ValueError(f'{type(self).__name__}: {len(rgb)} images for attention maps of '
                             f'{maps.batch_size}')
        device = next(iter(maps.maps.values())).device
        given_float = given_as_float(images, len(rgb))
        labels: List[Optional[torch.Tensor]] = [None] * len(rgb)
        for members in size_groups([image.shape[-2:] for image in rgb]).values():
            names = None if class_names is None else [class_names[i] for i in members]
            batch = torch.stack([rgb[i] for i in members]).to(device)
            floats = [at for at, i in enumerate(members) if given_float[i]]
            if floats:
                check_value_range(batch, floats, members, finite_only=True)
            for i, label in zip(members, super().__call__(_samples(maps, members), batch, names)):
                labels[i] = label
        return labels

    def labels_at(self, maps: AttentionMaps, images: Optional[torch.Tensor],
                  class_names: Optional[Sequence[Sequence[str]]],
                  sizes: Sequence[Tuple[int, int]]) -> List[torch.Tensor]:
        """Each sample's labels at ``sizes[b]`` from one batched pass at the ``(B, 3, H, W)``
        ``images``' size (the tools: images at the working size, labels at their files' sizes).
        Here each label is resized by the nearest pixel centre (``'nearest-exact'``);
        :class:`~.iseg.ISeg` and unsupervised :class:`~.diffseg.DiffSeg` resize their score maps
        before the argmax instead, as released."""
        self.check_sizes(maps, sizes)
        labels = self(maps, images, class_names)
        return [label if tuple(label.shape) == tuple(size) else
                F.interpolate(label[None, None].float(), size=tuple(size),
                              mode='nearest-exact')[0, 0].long()
                for label, size in zip(labels, sizes)]

    def check_sizes(self, maps: AttentionMaps, sizes: Sequence[Tuple[int, int]]) -> None:
        """:meth:`labels_at`'s ``sizes``: one ``(H, W)`` per image of ``maps``."""
        if len(sizes) != maps.batch_size:
            raise ValueError(f'{type(self).__name__}.labels_at: {len(sizes)} sizes for '
                             f'{maps.batch_size} images (one (H, W) per image)')

    def forward(self, maps: AttentionMaps, images: Optional[torch.Tensor],
                class_names: Optional[Sequence[Sequence[str]]]) -> torch.Tensor:
        """Labels ``(B, H, W)`` int64 (dataset indices, :attr:`ignore_index` where unsure).

        Args:
            maps: attention captured with :attr:`capture_spec` (float32).
            images: ``(B, 3, H, W)`` RGB in ``[0, 255]`` at the output size (generators that refine
                with the image use it; others take only its size). ``None``: output at
                ``maps.image_size``.
            class_names: per sample, the names (from :attr:`classes`) present in the image.
        """
        raise self._undefined('forward()', 'turn the captured maps into labels (B, H, W)')

    def config_dict(self) -> Dict:
        """Everything that changes the output, for manifests and cache keys."""
        raise self._undefined('config_dict()', 'return a dict of every option that changes the '
                              'labels (label caches and manifests are keyed on it)')

    def _undefined(self, member: str, what: str) -> NotImplementedError:
        """The error of a member a generator class must define, saying what it should do."""
        return NotImplementedError(f'{type(self).__name__}.{member} is not defined: {what}')

    def extra_repr(self) -> str:
        try:
            return ', '.join(f'{k}={v!r}' for k, v in self.config_dict().items())
        except NotImplementedError:
            return ''  # a generator under construction still prints


@functools.lru_cache(maxsize=None)
def _option_names(cls) -> frozenset:
    """The named parameters of a generator class's ``__init__``."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(name for name, p in inspect.signature(cls.__init__).parameters.items()
                     if p.kind in kinds and name != 'self')


def size_groups(sizes: Sequence[Sequence[int]]) -> Dict[Tuple[int, int], List[int]]:
    """The indices of each distinct ``(H, W)`` in ``sizes``, in order of first appearance."""
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(int(v) for v in size), []).append(i)
    return groups


def _samples(maps: AttentionMaps, indices: Sequence[int]) -> AttentionMaps:
    """The attention of the samples ``indices`` only."""
    index = torch.as_tensor(list(indices), dtype=torch.long)
    return replace(maps, maps={k: v[index.to(v.device)] for k, v in maps.maps.items()},
                   prompts=[maps.prompts[i] for i in indices if i < len(maps.prompts)],
                   token_positions=[maps.token_positions[i] for i in indices
                                    if i < len(maps.token_positions)])
