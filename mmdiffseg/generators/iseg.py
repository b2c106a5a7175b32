"""iSeg (Sun et al., arXiv 2409.03209) as released in linsun449/iseg.code (ALGORITHMS.md section 3).

One conditional U-Net pass at t = 100 on the noised image; the prompt names the image's classes
("Cat-Cross") and the engine multiplies the selected class-token embeddings by ``token_enhance``.
Then, per image (all batched; float16 where the release computes in float16, ``map_precision``):

1. cross-attention at 16 and 32 (a head subset or all heads), each token map normalised to sum 1
   over space, bilinear to 64, weighted 0.7 / 0.3 (``wsss/iSeg.py:process_cross_att``);
2. cluster smoothing: k-means with symmetric KL on each pixel's token vector, the vector replaced by
   its cluster's mean (``wsss/featurecluster.py:DFC_KL(32, 20, 64)``);
3. each class's column (mean of its selected sub-tokens) refined ``iters`` times by the
   entropy-reduced self-attention of one 64x64 layer (``iSeg.get_att_map``, "Ent-Self");
4. bilinear to 512, per-class min-max, background score, argmax (``util/cam.py:cam_to_label``).

Deliberate differences from the released code: divisions are guarded, so an all-zero or constant
class column, or a self-attention key column that float16 rounds to zeros, gives an all-zero map
where the released code gives NaN (and labels the whole image background). Token positions are the
released table's by default, miscount included (:mod:`.iseg_tokens`: COCO's 'fire hydrant'
shifts every later class one token early); ``token_table='tokenizer'`` reads every word's own
tokens. The noise (seed 1101) is drawn
by a CPU generator, the same on every device; ``noise_draw='cuda_float16'`` draws the release's
(CUDA's generator, float16). The released k-means asks for 32 clusters but seeds a grid of step
``64 // sqrt(32) = 11``, i.e. the 36 pixels ``{0, 11, 22, 33, 44, 55}^2``; that is what
:func:`grid_seeds` reproduces. Clusters that lose all pixels are dropped, as released.

Heads: the VOC presets' hand-picked SD 2.1-base heads as released (cross-attention: of 20 per
layer at 16x16 and 10 at 32x32; self-attention: 1 and 2 of 5 at 64x64); ``cross_heads=None`` /
``self_heads=None`` average all heads on any model (the ``*_sd1x`` presets: VOC for SD 1.x). A
head list the model lacks stops the tools before any work, naming the fix
(:meth:`DiffusionAttentionEngine.check_capture`).

Precision, both as released by default: the k-means KL distance in float16
(``kmeans_precision``, :func:`~.kmeans.kl_kmeans`) and the maps, their aggregation, the k-means
centres, cluster and sub-token means rounded to float16 where the release computes them in float16
(``map_precision``, :mod:`.iseg_aggregation`, which gives how far ``'float32'`` moves the labels).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..attention.maps import AttentionMaps, CaptureRequest, CaptureSpec
from ..attention.noise import check_noise_draw
from ..options import (check_choice, check_flag, check_real, check_seed, check_template,
                       check_token_offsets, check_whole, check_wholes)
from ..registry import MASK_GENERATORS
from ..transfer import host_to_device, padded_table
from .base import IGNORE_INDEX, MaskGenerator, size_groups
from .class_names import VOCABULARIES, prompt_name
from .functional import minmax_normalize
from .iseg_aggregation import MAP_PRECISIONS, aggregate_cross
from .iseg_graphs import ISegSteps
from .iseg_steps import (assign_labels, cam_normalize, entropy_reduced_attention,
                         refine_with_self_attention)
from .iseg_presets import (CROSS_LAYERS, ISEG_PRESETS, RELEASED_CLASS_ORDER,
                           SD21_VOC_HEADS, SELF_LAYER, SELF_RESOLUTION, VOC_BG_CONTEXT,
                           WSSS_PROMPT, applies_preset, check_bg_context, check_cross_heads,
                           check_prompt_names, check_res_weights, head_layout_fix, heads_at,
                           self_heads_note)
from .iseg_tokens import RELEASED_TOKEN_MISCOUNTS, TOKEN_TABLES, token_names
from .kmeans import KMEANS_PRECISIONS, cluster_mean, grid_seeds, kl_kmeans

__all__ = [
    'ISeg', 'ISEG_PRESETS', 'CROSS_LAYERS', 'SELF_LAYER', 'SD21_VOC_HEADS',
    'entropy_reduced_attention', 'refine_with_self_attention', 'grid_seeds',
    'kl_kmeans', 'cluster_mean', 'assign_labels'
]

_TINY = torch.finfo(torch.float32).tiny


# -- the generator -------------------------------------------------------------------------------
@MASK_GENERATORS.register_module()
class ISeg(MaskGenerator):
    """iSeg: Cat-Cross prompt, cluster-smoothed cross-attention, Ent-Self refinement.

    Defaults are the released WSSS VOC settings; :data:`ISEG_PRESETS` (and ``configs/iseg/``) hold
    all five released tasks. Released flag names in brackets.

    Args:
        classes: dataset class names (labels index this list); default: the vocabulary's.
        vocabulary: ``'voc'``, ``'coco_object'``, ``'context59'`` (class names, the words prompts
            use for them and the sub-tokens read), ``'ade20k'`` (not released: mmseg's names,
            all tokens) or ``None`` (readable words, all tokens).
        prompt_names: dataset name -> prompt words, on top of the vocabulary's.
        token_offsets: prompt words -> offsets of the sub-tokens read and enhanced, on top of the
            vocabulary's (a word not listed uses all its tokens).
        prompt_template: with ``{classes}`` (the words joined by ``' and '``) and ``{bg_context}``.
        bg_context: context words appended to the prompt.
        timestep: diffusion timestep of the single U-Net pass [``test_t``].
        noise_seed: seed of the noise, the same for every image [``rand_seed``].
        noise_draw: ``'cpu'``: drawn by a CPU generator (the same noise on every device);
            ``'cuda_float16'``: by CUDA's generator in float16, the release's noise (needs CUDA).
        token_enhance: factor on the selected class-token embeddings [``enhanced``].
        cross_heads: heads averaged per resolution: ``None`` = all [``att_mean``], ``'voc'`` = the
            released hand-picked SD 2.1-base lists (:data:`SD21_VOC_HEADS`), or ``{res: [...]}``.
        res_weights: weight of the cross-attention at 16 and 32.
        self_heads: heads of :data:`SELF_LAYER` averaged for Ent-Self (released: 1 and 2 of SD
            2.1-base's 5); ``None`` = all.
        use_cluster: k-means smoothing of the cross-attention [``no_use_cluster``].
        num_clusters: sets the seed grid as ``DFC_KL(num_clusters, ...)`` does (:func:`grid_seeds`).
        cluster_iters: k-means assignment steps.
        kmeans_precision: of the k-means distance (:func:`kl_kmeans`): ``'float16'`` as released
            (``util/attn.py:kl_dis``), ``'float32'`` with guarded logs.
        map_precision: ``'float16'``: the maps, their aggregation, k-means centres, cluster
            and sub-token means rounded to float16 where the release computes in float16
            (:mod:`.iseg_aggregation`), the release's numbers; ``'float32'``: kept in float32.
        iters: Ent-Self refinement steps [``iter``].
        ent: entropy-reduction strength [``ent``].
        postprocess_backend: how k-means smoothing and Ent-Self run (same numbers): ``'torch'``
            eagerly, ``'graph'`` from CUDA graphs, ``'auto'`` graphs on CUDA for small batches
            (:mod:`.iseg_graphs`).
        cam_bg_thr: 0 = background score ``(1 - max)^2``; > 0 = score threshold [``cam_bg_thr``].
        mask_size: side the class maps are upsampled to before min-max [``test_mask_size``].
        preset: a task of :data:`ISEG_PRESETS` whose released settings fill every option not
            given (``ISeg(preset='wsss_coco')``, ``dict(type='ISeg', preset='wsss_coco')``).
        class_order: order of an image's classes in its prompt and in the argmax (ties go to the
            first); names not listed follow in ``classes`` order. Default: the vocabulary's
            released label order (:data:`RELEASED_CLASS_ORDER` for Context 59, else the
            vocabulary's class list, the released ids' order) whatever the order of
            ``classes``; without a vocabulary, ``classes`` order.
        token_table: ``'released'``: the sub-tokens the released table points at, miscounts
            included (:mod:`.iseg_tokens`); ``'tokenizer'``: each word's own tokens.
    """

    method = 'iseg'
    #: the fix pre-flight names when the head lists do not fit the model (``where``: config key)
    head_layout_fix = staticmethod(head_layout_fix)

    def model_notes(self, layers: Sequence) -> List[str]:
        return self_heads_note(self.self_heads, layers)

    @applies_preset
    def __init__(self,
                 classes: Optional[Sequence[str]] = None,
                 vocabulary: Optional[str] = 'voc',
                 prompt_names: Optional[Mapping[str, str]] = None,
                 token_offsets: Optional[Mapping[str, Sequence[int]]] = None,
                 prompt_template: str = WSSS_PROMPT,
                 bg_context: str = VOC_BG_CONTEXT,
                 timestep: int = 100,
                 noise_seed: Optional[int] = 1101,
                 noise_draw: str = 'cpu',
                 token_enhance: float = 1.6,
                 cross_heads='voc',
                 res_weights: Optional[Mapping[int, float]] = None,
                 self_heads: Sequence[int] = (1, 2),
                 use_cluster: bool = True,
                 num_clusters: int = 32,
                 cluster_iters: int = 20,
                 kmeans_precision: str = 'float16',
                 map_precision: str = 'float16',
                 iters: int = 10,
                 ent: float = 0.015,
                 postprocess_backend: str = 'auto',
                 cam_bg_thr: float = 0.0,
                 mask_size: int = 512,
                 preset: Optional[str] = None,
                 class_order: Optional[Sequence[str]] = None,
                 token_table: str = 'released',
                 ignore_index: int = IGNORE_INDEX):
        if vocabulary is not None and vocabulary not in VOCABULARIES:
            raise KeyError(f'ISeg: unknown vocabulary {vocabulary!r}; '
                           f'known: {sorted(VOCABULARIES)}')
        vocab = VOCABULARIES.get(vocabulary, {}) if vocabulary else {}
        if classes is None:
            if not vocab:
                raise ValueError('ISeg needs `classes` when `vocabulary` is None')
            classes = vocab['classes']
        super().__init__(classes=classes, ignore_index=ignore_index)
        self.vocabulary = vocabulary
        self.prompt_names = {**vocab.get('prompt_names', {}), **check_prompt_names(
            prompt_names, [*self.classes, *vocab.get('classes', ())])}
        self.token_table = check_choice('ISeg', 'token_table', token_table, TOKEN_TABLES)
        released = token_table == 'released'
        miscounts = RELEASED_TOKEN_MISCOUNTS.get(vocabulary, {}) if released else {}
        self._miscounted = tuple(miscounts)
        words = [self.prompt_word(c) for c in self.classes]
        self.token_offsets = {k: [int(o) for o in v] for k, v in
                              {**vocab.get('token_offsets', {}), **miscounts}.items()}
        self.token_offsets.update(check_token_offsets('ISeg', token_offsets, words,
                                                      "classes' prompt words"))
        self.prompt_template = check_template('ISeg', 'prompt_template', prompt_template,
                                              'classes', optional=('bg_context',))
        self.bg_context = check_bg_context(bg_context, words)
        self.timestep = check_whole('ISeg', 'timestep', timestep, low=0)
        self.noise_seed = None if noise_seed is None else check_seed('ISeg', 'noise_seed',
                                                                     noise_seed)
        check_noise_draw(noise_draw)
        self.noise_draw = noise_draw
        self.token_enhance = check_real('ISeg', 'token_enhance', token_enhance, low=0,
                                        low_open=True)
        self.res_weights = check_res_weights(res_weights)
        self.cross_heads = check_cross_heads(cross_heads)
        self.self_heads = None if self_heads is None else check_wholes(
            'ISeg', 'self_heads', self_heads, '[1,2]', low=0)
        if self.self_heads == ():
            raise ValueError('ISeg: self_heads must name at least one head (None = all heads)')
        self.use_cluster = check_flag('ISeg', 'use_cluster', use_cluster)
        self.num_clusters = check_whole('ISeg', 'num_clusters', num_clusters, 1,
                                        SELF_RESOLUTION ** 2)  # (k-means of the grid's pixels)
        self.cluster_iters = check_whole('ISeg', 'cluster_iters', cluster_iters, low=1)
        self.kmeans_precision = check_choice(
            'ISeg', 'kmeans_precision', kmeans_precision, KMEANS_PRECISIONS,
            "'float16': the released k-means distance, 'float32': guarded logs")
        self.map_precision = check_choice(
            'ISeg', 'map_precision', map_precision, MAP_PRECISIONS,
            "'float16': rounded as the release's float16 run, 'float32': every step before "
            'Ent-Self in float32')
        self.iters = check_whole('ISeg', 'iters', iters, low=0)
        self.ent = check_real('ISeg', 'ent', ent, low=0)
        self.steps = ISegSteps(postprocess_backend)
        self.cam_bg_thr = check_real('ISeg', 'cam_bg_thr', cam_bg_thr, 0, 1, high_open=True)
        self.mask_size = check_whole('ISeg', 'mask_size', mask_size, low=1)
        self.preset = preset
        unknown = sorted(set(class_order or ()) - set(self.classes))
        if unknown:
            raise ValueError(f'ISeg: class_order names {unknown}, which are not in `classes`')
        order = list(class_order if class_order is not None else
                     RELEASED_CLASS_ORDER.get(vocabulary, vocab.get('classes', self.classes)))
        rank = {name: i for i, name in enumerate(dict.fromkeys(order))}
        self._rank = {name: rank.get(name, len(rank) + i) for i, name in enumerate(self.classes)}
        self.class_order = sorted(self.classes, key=self._rank.get)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> 'ISeg':
        """The released settings of one task (:data:`ISEG_PRESETS`), optionally changed."""
        return cls(**overrides, preset=name)

    def check_device(self, device: torch.device) -> None:
        check_noise_draw(self.noise_draw, device)
        self.steps.check_device(device)

    # -- what the engine must do -------------------------------------------------------------
    @property
    def capture_spec(self) -> CaptureSpec:
        """ALGORITHMS.md 3.1: the released WSSS cross-attention layers of each resolution of
        ``res_weights`` (``cross_heads``) and the 64x64 self-attention layer (``self_heads``)."""
        fix = (f"{head_layout_fix()} (the released head lists are SD 2.1-base's; in Python: "
               'ISeg(..., cross_heads=None, self_heads=None))')  # the engine's error names it
        requests = [CaptureRequest('cross', r, layers=CROSS_LAYERS[r],
                                   heads=heads_at(self.cross_heads, r), name=f'iseg_cross{r}',
                                   heads_fix=fix)
                    for r, w in sorted(self.res_weights.items()) if w > 0]
        requests.append(CaptureRequest('self', SELF_RESOLUTION, layers=(SELF_LAYER,),
                                       heads=self.self_heads, name='iseg_self64', heads_fix=fix))
        return CaptureSpec(tuple(requests))

    def prompt_word(self, name: str) -> str:
        """The words naming dataset class ``name`` in the prompt."""
        return self.prompt_names.get(name) or prompt_name(name)

    def _foreground(self, names: Sequence[str]) -> List[str]:
        """The names in ``names`` minus background (the prompt implies it), once each, in
        :attr:`class_order` (the released label order; it also keeps 'dog' ahead of 'hot dog' for
        the token search); unknown names raise."""
        ids = set(self.class_indices(names))
        return sorted((self.classes[i] for i in ids if self.classes[i] != 'background'),
                      key=self._rank.get)

    def _token_names(self, names: Sequence[Sequence[str]]):
        """Per image, the names under which the engine places its classes' tokens
        (:func:`~.iseg_tokens.token_names`), and the sub-token offsets of all of them."""
        placed, offsets = [], {}
        for ns in names:
            words, table = token_names([self.prompt_word(n) for n in ns], self.token_offsets,
                                       self._miscounted)
            placed.append(words)
            offsets.update(table)
        return placed, offsets

    def extract_kwargs(self, class_names: Sequence[Sequence[str]]) -> Dict:
        """Cat-Cross (ALGORITHMS.md 3.3): the prompt of the image's classes and ``bg_context``,
        their selected tokens (scaled by ``token_enhance``), ``timestep`` and the seeded noise."""
        names = [self._foreground(ns) for ns in self.name_lists(class_names)]
        prompts = [self.prompt_template.format(classes=' and '.join(map(self.prompt_word, ns)),
                                               bg_context=self.bg_context) for ns in names]
        placed, offsets = self._token_names(names)
        return dict(prompts=prompts, class_names=placed, timestep=self.timestep,
                    noise=self.noise_seed, noise_draw=self.noise_draw,
                    token_enhance=self.token_enhance,
                    token_offsets=offsets)

    # -- labels ------------------------------------------------------------------------------
    def forward(self, maps: AttentionMaps, images: Optional[torch.Tensor] = None,
                class_names: Optional[Sequence[Sequence[str]]] = None) -> torch.Tensor:
        """Labels ``(B, H, W)`` at the images' size: class maps (ALGORITHMS.md 3.2-3.4: aggregation,
        k-means smoothing, Ent-Self), then ``cam_to_label`` (3.5)."""
        out_size = tuple(images.shape[-2:]) if images is not None else tuple(maps.image_size)
        cams, table, valid = self._class_maps(maps, class_names)
        if cams is None:
            return table.new_full((table.shape[0], *out_size), self.background_index)
        return self._assign(cams, table, valid, out_size)

    def labels_at(self, maps: AttentionMaps, images: Optional[torch.Tensor],
                  class_names: Optional[Sequence[Sequence[str]]],
                  sizes: Sequence[Tuple[int, int]]) -> List[torch.Tensor]:
        """The class maps bilinearly resized to each size, then min-max and argmax there, as
        released (``wsss/iSeg.py`` resizes them to the label's size): the batch's work is shared,
        the last step runs once per distinct size."""
        self.check_sizes(maps, sizes)
        cams, table, valid = self._class_maps(maps, class_names)
        if cams is None:
            return [table.new_full(tuple(size), self.background_index) for size in sizes]
        labels: List[Optional[torch.Tensor]] = [None] * len(sizes)
        for size, members in size_groups(sizes).items():
            index = host_to_device(members, cams.device)  # no host-device sync
            for i, label in zip(members, self._assign(
                    cams[index], table[index], None if valid is None else valid[index], size)):
                labels[i] = label
        return labels

    def _class_maps(self, maps: AttentionMaps, class_names):
        """``(cams, table, valid)``: the min-max class maps ``(B, C, mask_size, mask_size)``
        (``None`` when no sample names a class), each output slot's label ``(B, C + 1)``
        [background, class_1, ...] and which class slots are real (``None``: all)."""
        maps.check_finite()
        self_attn = self._self_attention(maps)
        b, n = self_attn.shape[:2]
        class_names = self.name_lists(class_names)
        if len(class_names) != b:
            raise ValueError(f'ISeg needs the class names of each of the {b} images, got '
                             f'{len(class_names)} lists')
        names = [self._foreground(ns) for ns in class_names]
        num = max(len(ns) for ns in names)
        # built on the host and copied before any GPU work is queued
        table, valid = padded_table([[self.background_index] + self.class_indices(ns)
                                     for ns in names], self_attn.device, self.ignore_index)
        valid = None if valid is None else valid[:, 1:]
        if num == 0:
            return None, table, valid

        side = math.isqrt(n)
        half = self.map_precision == 'float16'
        cross = aggregate_cross(maps, self.res_weights, b, side, getattr(torch, self.map_precision))
        graphed = self.steps.graphed(self_attn)
        if self.use_cluster:
            seeds = grid_seeds(side, self.num_clusters, device=cross.device)
            cross = self.steps.smooth(cross, seeds, self.cluster_iters, self.kmeans_precision,
                                      graphed, half)
        columns = self._class_columns(maps, cross, names).float()

        refined = self.steps.ent_self(self_attn, columns.transpose(1, 2), self.ent, self.iters,
                                      graphed)
        cams = refined.reshape(b, num, side, side)
        cams = F.interpolate(cams, size=(self.mask_size, self.mask_size), mode='bilinear',
                             align_corners=False)
        return minmax_normalize(cams), table, valid

    def _assign(self, cams: torch.Tensor, table: torch.Tensor, valid: Optional[torch.Tensor],
                out_size: Tuple[int, int]) -> torch.Tensor:
        """Labels ``(B, *out_size)``: the class maps resized to ``out_size``, background score,
        argmax (``util/cam.py:cam_to_label``)."""
        resized = tuple(out_size) != (self.mask_size, self.mask_size)
        if resized:
            cams = F.interpolate(cams, size=tuple(out_size), mode='bilinear', align_corners=False)
        index = assign_labels(cam_normalize(cams, zero_min=not resized), valid, self.cam_bg_thr)
        return table.gather(1, index.flatten(1)).view(cams.shape[0], *out_size)

    def _self_attention(self, maps: AttentionMaps) -> torch.Tensor:
        sa = maps['iseg_self64']
        n = sa.shape[-1]
        if sa.dim() != 3 or sa.shape[1] != n or math.isqrt(n) ** 2 != n:
            raise ValueError(f"ISeg: AttentionMaps['iseg_self64'] must be (B, N, N) over a square "
                             f'grid, got {tuple(sa.shape)}')
        # released: the float16 maps copied to float32 (Ent-Self runs in float32)
        return sa.to(getattr(torch, self.map_precision)).float()

    def _class_columns(self, maps: AttentionMaps, cross: torch.Tensor,
                       names: List[List[str]]) -> torch.Tensor:
        """``(B, N, C)`` class columns, ``C`` the most classes of a sample (zeros for padding)."""
        words, table = self._token_names(names)
        for i, ws in enumerate(words):
            positions = maps.token_positions[i] if i < len(maps.token_positions) else {}
            for w in ws:
                offsets = table.get(w)
                if offsets and w in positions and max(offsets) >= len(positions[w]):
                    raise ValueError(f'ISeg: token_offsets[{w!r}] = {offsets} but {w!r} has '
                                     f'{len(positions[w])} token(s) in the prompt of sample {i}')
        return replace(maps, maps={'iseg_cross': cross}).class_token_matrix(
            'iseg_cross', words, table)

    def config_dict(self) -> Dict:
        return dict(method=self.method, classes=list(self.classes),
                    prompt_names=dict(self.prompt_names), token_offsets=dict(self.token_offsets),
                    prompt_template=self.prompt_template, bg_context=self.bg_context,
                    timestep=self.timestep, noise_seed=self.noise_seed,
                    token_enhance=self.token_enhance, cross_heads=self.cross_heads,
                    res_weights=dict(self.res_weights),
                    self_heads=None if self.self_heads is None else list(self.self_heads),
                    use_cluster=self.use_cluster, num_clusters=self.num_clusters,
                    cluster_iters=self.cluster_iters, kmeans_precision=self.kmeans_precision,
                    iters=self.iters, ent=self.ent,
                    cam_bg_thr=self.cam_bg_thr, mask_size=self.mask_size,
                    # only where they change labels (older caches of the other tasks stay valid)
                    **({} if self.class_order == self.classes else
                       dict(class_order=list(self.class_order))),
                    **({} if self.noise_draw == 'cpu' else dict(noise_draw=self.noise_draw)),
                    # float32 maps give the labels of before the option: their caches stay
                    **({} if self.map_precision == 'float32' else
                       dict(map_precision=self.map_precision)),
                    **({} if self.ignore_index == IGNORE_INDEX else
                       dict(ignore_index=self.ignore_index)),
                    **(dict(token_table=self.token_table)
                       if self.vocabulary in RELEASED_TOKEN_MISCOUNTS else {}))
