"""SeeDiff (Park, Jo & Baik, AAAI 2025): class mask of a generated image by seeded region expansion.

Faithful to the released ``src/seediff_app.py:save_cross_attention`` (ALGORITHMS.md 2.2-2.4),
written batched and vectorised:

Token grids below are at 512 px (SD's latent 64), as released; ``resolutions`` scales them for
other square sizes (768 px: 24, 48, 96), reading the same layers.

1. Cross-attention at 16x16, per layer and per class token: each map min-max normalised (a layer
   whose head-summed map has variance <= ``flat_layer_var`` is scaled by 0.01), summed, min-max
   -> ``CA16``.
2. Seeds: ``CA16^2`` above its Otsu threshold (``seed_rule='otsu'``, as released) or above
   ``alpha`` (``'alpha'``, the paper's fixed alpha = 0.5, the released code's overwritten line).
3. Expansion on the 16x16 self-attention of one layer:
   ``S(j; seeds) = sum_s cos(SA[j], SA[s]) = r_j . sum_s r_s`` with unit rows ``r``: one
   matrix product for all classes, ``M16 = minmax(S)``.
4. Background refinement at 32 and 64: prior ``P = bicubic(M_prev)``; background seeds where
   ``P^2`` is not above its Otsu threshold; ``M_r = minmax(minmax(1 - S(.; B)) * minmax(P))``.
5. ``M = minmax(bicubic(M64 -> output size))``; mask ``M > threshold`` (0.3);
   :class:`~mmdiffseg.generators.pamr.PAMR` on the RGB image; foreground where
   ``minmax(PAMR(mask)) > final_threshold`` (0.8).

SeeDiff makes one class per synthetic image. Several classes in one image (an extension) run the
same steps per class, batched as channels; a pixel claimed by several classes goes to the one with
the highest pre-threshold map ``M``. Pixels claimed by no class are background
(``'background'``'s index when it is a class, else ``ignore_index``).

Degenerate inputs have defined results: no seed (uniform or all-zero class attention, where the
released code divides 0 by 0) gives an all-zero map and no foreground; a constant layer map adds
zero; NaN/inf in any map raises :meth:`AttentionMaps.check_finite`'s error naming the map.
PAMR needs the RGB image: ``images=None`` raises unless ``pamr_iter=0``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..attention.maps import AttentionMaps, CaptureRequest, CaptureSpec
from ..options import (check_choice, check_real, check_seed, check_template, check_token_offsets,
                       check_whole, check_wholes)
from ..registry import MASK_GENERATORS
from ..transfer import padded_table
from .base import MaskGenerator
from .functional import minmax_normalize, otsu_threshold
from .pamr import PAMR

__all__ = ['SeeDiff', 'SEEDIFF_SELF_LAYERS', 'RELEASED_RESOLUTIONS', 'RELEASED_TOKEN_OFFSETS',
           'resolutions_for', 'summed_cosine_similarity', 'otsu_foreground']

#: the one self-attention layer per level the released code reads (the first one stored, store
#: order = forward order, up blocks listed first), keyed by its token grid at 512 px
SEEDIFF_SELF_LAYERS = {
    16: 'up_blocks.1.attentions.0.transformer_blocks.0.attn1',
    32: 'up_blocks.2.attentions.0.transformer_blocks.0.attn1',
    64: 'up_blocks.3.attentions.0.transformer_blocks.0.attn1',
}
#: token grids of the seed level and the two refinement levels at 512 px (latent 64)
RELEASED_RESOLUTIONS = tuple(SEEDIFF_SELF_LAYERS)
#: the seed level's cross-attention, per layer
CROSS_NAME = 'seediff_cross'
SEED_RULES = ('otsu', 'alpha')
#: the release's token rules (``seediff_app.py:aggregate_attention``, ALGORITHMS.md 2.1), by class
#: name, as offsets from the name's first CLIP token: pottedplant = pot + plant (pot/ted/plant);
#: tvmonitor, and COCO's 'cell phone' and 'parking meter', = the first token + the token two after
#: it, the end token (tv/monitor/<end>, cell/phone/<end>); diningtable = the token after the first,
#: 'ing' (din/ing/table). All but pottedplant are off-by-one accidents kept as released; the
#: intended words: ``token_offsets={'tvmonitor': [0, 1], 'cell phone': [0, 1], 'parking meter':
#: [0, 1], 'diningtable': [2]}``
RELEASED_TOKEN_OFFSETS = {'pottedplant': (0, 2), 'tvmonitor': (0, 2), 'cell phone': (0, 2),
                          'parking meter': (0, 2), 'diningtable': (1,)}
#: the rules :meth:`SeeDiff.config_dict` records whatever the classes, as it has since the first
#: version (label caches and manifests keep their keys); the others only for a class present
ALWAYS_RECORDED_TOKEN_RULES = ('pottedplant', 'tvmonitor', 'diningtable')
#: ``SeeDiff.pamr_flat``'s default: a PAMR output whose spread is at most this times its values
#: has converged to a constant (a flat image, a small synthesis); the release min-max stretches its
#: float32 rounding into a mask (IoU 0.001 on a flat grey image with known-answer maps); a spread
#: left above it (5e-5 on a 64x64 flat image, an off-centre object) is stretched as released
FLAT_PAMR_OUTPUT = 1e-5
#: Otsu histogram levels of :func:`otsu_foreground` (released: ``uint16``, 65536)
OTSU_LEVELS = 1024


def resolutions_for(latent_size: int) -> tuple:
    """SeeDiff's token grids for a square latent of ``latent_size`` (image size / 8 on SD 1.x /
    2.x): its quarter, half and itself, ``(16, 32, 64)`` at 512 px."""
    if latent_size % 8:
        raise ValueError(f'SeeDiff: the latent side ({latent_size}) must be a multiple of 8 (the '
                         'U-Net halves it three times): image sizes that are multiples of 64')
    return (latent_size // 4, latent_size // 2, latent_size)


def self_name(resolution: int) -> str:
    return f'seediff_self{resolution}'


def summed_cosine_similarity(rows: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """``S[b, c, j] = sum_s seeds[b, c, s] * cos(rows[b, j], rows[b, s])`` as two matrix products:
    the seeded expansion's similarity (ALGORITHMS.md 2.3 steps 2-4), which the release sums as
    one cosine-similarity map per seed.

    Args:
        rows: ``(B, N, D)`` (self-attention rows).
        seeds: ``(B, C, N)`` 0/1 seed indicators (any weights work).
    """
    unit = F.normalize(rows.float(), dim=-1, eps=1e-8)
    return (seeds.float() @ unit) @ unit.transpose(1, 2)


def otsu_foreground(x: torch.Tensor) -> torch.Tensor:
    """Pixels of each map ``(B, ...)`` of ``x >= 0`` above Otsu's threshold, as the released
    ``cv2.threshold(uint16(x * 255), 0, 255, THRESH_BINARY + THRESH_OTSU) > 0``.

    The levels ``floor(x * 255)`` are not clipped at 255: the squared bicubic priors of the
    refinement levels overshoot 1 (a 2x bicubic resample of a [0, 1] map reaches 1.32, squared
    1.75: level 445), and the released ``uint16`` input keeps those levels in Otsu's class
    means. Levels above ``OTSU_LEVELS - 1`` are clipped.
    """
    flat = x.reshape(x.shape[0], -1).float()
    levels = (flat.clamp_min(0) * 255).floor().clamp_max(OTSU_LEVELS - 1)
    top = OTSU_LEVELS - 1  # otsu_threshold quantises floor(v * top): v = (level + 0.5) / top
    threshold = (otsu_threshold((levels + 0.5) / top, bins=OTSU_LEVELS) * top).round()
    return (levels > threshold[:, None]).reshape(x.shape)


def _resize(maps: torch.Tensor, size) -> torch.Tensor:
    """Bicubic resize of ``(B, C, h, w)`` (``align_corners=False``, as cv2 ``INTER_CUBIC``)."""
    return F.interpolate(maps, size=tuple(size), mode='bicubic', align_corners=False)


@MASK_GENERATORS.register_module()
class SeeDiff(MaskGenerator):
    """SeeDiff's mask generator (see the module docstring for the steps).

    Args:
        classes: dataset class names; labels index this list.
        seed_rule: ``'otsu'`` (released) or ``'alpha'`` (paper: seeds where ``CA16^2 > alpha``).
        alpha: the fixed seed threshold of ``seed_rule='alpha'``.
        threshold: the pre-PAMR threshold on the final map (app 0.3; the CLI script used 0.5).
        final_threshold: threshold on ``minmax(PAMR(mask))``.
        pamr_iter / pamr_dilations / pamr_sigma_factor / pamr_tol: :class:`PAMR` settings
            (SeeDiff: 5000, (1,), 0.2, exact). ``pamr_iter=0`` skips PAMR (then no image is needed
            and the output is ``M > threshold``).
        pamr_flat: a PAMR output whose spread is at most this times its values (converged to a
            constant: a flat image, a small synthesis) is no mask; 0: min-max as released, which
            stretches its float32 rounding into a mask that differs between devices.
        pamr_backend: :class:`PAMR`'s ``backend`` (``'auto'``: the fused Triton kernel on CUDA,
            PyTorch on CPU). An execution choice like the device (the backends agree within
            float32 rounding), so it is not part of :meth:`config_dict` (the label-cache key).
        flat_layer_var: a 16x16 layer whose head-SUMMED class map has (unbiased) variance at most
            this is scaled by 0.01 after min-max (released: 1e-4 on the sum of SD 1.4's 8 heads).
        num_heads: heads per layer of the captured model; the engine gives the head mean, the
            released variance test sees ``num_heads * mean``.
        token_offsets: per class, which prompt tokens to read, as offsets from the class name's
            first token; given entries replace those of their names in the default, which is
            as released: ``[0]`` (the first sub-token), except the release's rules for three VOC
            and two COCO names (:data:`RELEASED_TOKEN_OFFSETS`, applied whatever the config).
            An offset may pass the name's end, as those rules do (tvmonitor ``[0, 2]``: 'tv' and
            the end token). Each selected token's map is normalised per layer and all are summed
            (the released pottedplant rule).
        prompt_templates: for :meth:`generate_kwargs` / :meth:`extract_kwargs`; ``{}`` = class.
        steps / guidance_scale: denoising steps and CFG scale of the synthesis run.
        timestep / noise: for :meth:`extract_kwargs` on real images (an extension).
        resolutions: token grids of the seed level and the two refinement levels (the layers of
            :data:`SEEDIFF_SELF_LAYERS`): ``(16, 32, 64)`` at 512 px as released;
            :func:`resolutions_for` the latent size at other sizes (``synthesize.py --size``
            sets it).
    """

    method = 'seediff'

    def __init__(self, classes: Sequence[str], seed_rule: str = 'otsu', alpha: float = 0.5,
                 threshold: float = 0.3, final_threshold: float = 0.8, pamr_iter: int = 5000,
                 pamr_dilations: Sequence[int] = (1,), pamr_sigma_factor: float = 0.2,
                 pamr_tol: Optional[float] = None, pamr_backend: str = 'auto',
                 pamr_flat: float = FLAT_PAMR_OUTPUT,
                 flat_layer_var: float = 1e-4,
                 num_heads: int = 8, token_offsets: Optional[Dict[str, Sequence[int]]] = None,
                 prompt_templates: Sequence[str] = ('a photo of a {}',), steps: int = 50,
                 guidance_scale: float = 7.0, timestep: int = 300, noise=None,
                 resolutions: Sequence[int] = RELEASED_RESOLUTIONS, ignore_index: int = 255):
        super().__init__(classes, ignore_index)
        if classes is None:
            raise ValueError('SeeDiff needs `classes` (its labels are class indices)')
        check_choice('SeeDiff', 'seed_rule', seed_rule, SEED_RULES)
        if isinstance(prompt_templates, str):
            prompt_templates = (prompt_templates, )
        if not prompt_templates or isinstance(prompt_templates, dict):
            raise ValueError('SeeDiff: prompt_templates must be a non-empty list of strings with '
                             f'a "{{}}" for the class name, got {prompt_templates!r}')
        self.prompt_templates = [check_template('SeeDiff', 'prompt_templates', t, '')
                                 for t in prompt_templates]
        self.seed_rule = seed_rule
        self.alpha = check_real('SeeDiff', 'alpha', alpha, 0, 1, low_open=True,
                                high_open=True)  # (CA16 is min-max normalised: CA16^2 <= 1)
        self.threshold = check_real('SeeDiff', 'threshold', threshold, 0, 1, low_open=True,
                                    high_open=True)
        self.final_threshold = check_real('SeeDiff', 'final_threshold', final_threshold, 0, 1,
                                          low_open=True, high_open=True)
        self.pamr = PAMR(pamr_iter, pamr_dilations, pamr_sigma_factor, pamr_tol,
                         backend=pamr_backend)
        self.pamr_flat = check_real('SeeDiff', 'pamr_flat', pamr_flat, low=0)
        self.flat_layer_var = check_real('SeeDiff', 'flat_layer_var', flat_layer_var, low=0)
        self.num_heads = check_whole('SeeDiff', 'num_heads', num_heads, low=1)
        self.token_offsets = {**{k: list(v) for k, v in RELEASED_TOKEN_OFFSETS.items()},
                              **check_token_offsets(
                                  'SeeDiff', token_offsets, self.classes, 'class names')}
        self.steps = check_whole('SeeDiff', 'steps', steps, low=1)
        self.guidance_scale = check_real('SeeDiff', 'guidance_scale', guidance_scale, low=0)
        self.timestep = check_whole('SeeDiff', 'timestep', timestep, low=0)
        self.noise = noise if noise is None or isinstance(noise, torch.Tensor) else \
            check_seed('SeeDiff', 'noise (a seed)', noise)
        self.resolutions = check_wholes('SeeDiff', 'resolutions', resolutions, '[16,32,64]')
        seed, middle, top = (self.resolutions + (0, 0, 0))[:3]
        if len(self.resolutions) != 3 or not 0 < seed < middle < top:
            raise ValueError('SeeDiff: resolutions must be three increasing token grids (seed '
                             f'level, then the two refinement levels), got {resolutions!r}')

    # -- what the engine must do -------------------------------------------------------------
    @property
    def capture_spec(self) -> CaptureSpec:
        """ALGORITHMS.md 2.1-2.2: the cross-attention at ``resolutions[0]`` per layer (each is
        min-max normalised before the sum) and one self-attention layer per resolution."""
        requests = [CaptureRequest('cross', self.resolutions[0], per_layer=True, name=CROSS_NAME)]
        requests += [CaptureRequest('self', r, layers=(layer, ), name=self_name(r))
                     for r, layer in self.self_layers.items()]
        return CaptureSpec(requests=tuple(requests))

    def _prompt(self, names: Sequence[str], index: int = 0) -> str:
        template = self.prompt_templates[index % len(self.prompt_templates)]
        return template.format(' and '.join(names))

    def generate_kwargs(self, class_names: Sequence[str], start: int = 0) -> Dict:
        """``engine.generate`` arguments to synthesise one image per class name (templates are
        cycled from ``start``, e.g. the running image index; one name: one image). ``capture``
        is added by the caller."""
        class_names = [class_names] if isinstance(class_names, str) else list(class_names)
        self.class_indices(class_names)
        return dict(prompts=[self._prompt([c], start + i) for i, c in enumerate(class_names)],
                    class_names=[[c] for c in class_names], steps=self.steps,
                    guidance_scale=self.guidance_scale)

    def _segmented(self, names: Sequence[str]) -> List[str]:
        """The classes of ``names`` to segment: validated, once each, without ``'background'``
        (what no class claims)."""
        self.class_indices(names)
        return list(dict.fromkeys(n for n in names if n != 'background'))

    def check_device(self, device: torch.device) -> None:
        self.pamr.backend_for(torch.device(device))

    def model_notes(self, layers: Sequence) -> List[str]:
        """``num_heads`` against the heads of the cross-attention layers read at
        ``resolutions[0]``: the released flat-layer test sums SD 1.4's 8 heads."""
        heads = sorted({layer.heads for layer in layers
                        if layer.kind == 'cross' and layer.resolution == self.resolutions[0]})
        if not heads or heads == [self.num_heads]:
            return []
        return [f'SeeDiff: num_heads={self.num_heads} but the {self.resolutions[0]}x'
                f'{self.resolutions[0]} cross-attention layers of this U-Net have '
                f'{"/".join(map(str, heads))} heads, so the flat-layer test (flat_layer_var, '
                f'tuned on the sum of SD 1.4\'s 8 heads) reads another scale; set '
                f'the generator\'s num_heads={heads[0]} (the offline tools: --cfg-options '
                f'num_heads={heads[0]}; a training config: its generator entry\'s num_heads) to '
                'sum this model\'s heads as released']

    def extract_kwargs(self, class_names: Sequence[Sequence[str]]) -> Dict:
        """``engine.extract`` arguments for real images (an extension: one pass at ``timestep``
        with the first template naming every present class but background)."""
        named = [self._segmented(names) for names in self.name_lists(class_names)]
        return dict(prompts=[self._prompt(names) for names in named], class_names=named,
                    timestep=self.timestep, noise=self.noise)

    @property
    def self_layers(self) -> Dict[int, str]:
        """Token grid -> the self-attention layer read there."""
        return dict(zip(self.resolutions, SEEDIFF_SELF_LAYERS.values()))

    # -- steps ---------------------------------------------------------------------------------
    def class_cross_attention(self, maps: AttentionMaps,
                              class_names: Sequence[Sequence[str]]) -> torch.Tensor:
        """``CA16`` per class, ``(B, C_max, 256)`` (step 1; the seed level's grid), zero for
        padding classes."""
        cross = maps[CROSS_NAME].float()
        if cross.dim() == 3:  # one (mean) layer
            cross = cross.unsqueeze(1)
        side = self.resolutions[0]
        if cross.dim() != 4 or cross.shape[2] != side ** 2:
            raise ValueError(f'SeeDiff: AttentionMaps[{CROSS_NAME!r}] must be (B, layers, '
                             f'{side ** 2}, tokens) ({side}x{side} cross-attention per layer), '
                             f'got {tuple(cross.shape)}')
        b, _, n, _ = cross.shape
        out = cross.new_zeros(b, max([len(c) for c in class_names] + [1]), n)
        for i, names in enumerate(class_names):
            for c, name in enumerate(names):
                offsets = self.token_offsets.get(name, [0])
                first = maps.class_positions(i, name, 'SeeDiff: ')[0]
                tokens = [first + o for o in offsets]
                if min(offsets) < 0 or max(tokens) >= cross.shape[-1]:
                    raise ValueError(f'SeeDiff: token_offsets[{name!r}] = {offsets} reads tokens '
                                     f'{tokens} of a {cross.shape[-1]}-token prompt (offsets '
                                     f'count from the name\'s first token, at {first})')
                # (L*k, N); selected one by one: a list index would be a host-to-device copy
                layer_maps = torch.stack([cross[i][..., t] for t in tokens], 1).flatten(0, 1)
                flat = (layer_maps * self.num_heads).var(dim=-1) <= self.flat_layer_var
                normed = minmax_normalize(layer_maps, dims=(-1, ))
                normed = torch.where(flat[:, None], normed * 0.01, normed)
                out[i, c] = normed.sum(0)
        return minmax_normalize(out, dims=(-1, ))

    def seeds(self, ca: torch.Tensor) -> torch.Tensor:
        """Seed indicators ``(B, C, N)`` from ``CA16`` (step 2)."""
        squared = ca * ca
        if self.seed_rule == 'alpha':
            return squared > self.alpha
        return otsu_foreground(squared.flatten(0, 1)).view_as(ca)

    def _self_rows(self, maps: AttentionMaps, resolution: int) -> torch.Tensor:
        rows = maps[self_name(resolution)]
        if rows.dim() != 3 or rows.shape[1] != resolution ** 2:
            raise ValueError(f'SeeDiff: AttentionMaps[{self_name(resolution)!r}] must be '
                             f'(B, {resolution ** 2}, {resolution ** 2}), got {tuple(rows.shape)}')
        return rows

    def expansion_map(self, maps: AttentionMaps, ca: torch.Tensor) -> torch.Tensor:
        """``M64`` per class, ``(B, C, 64, 64)`` (steps 2-4; the top level's grid)."""
        b, c, _ = ca.shape
        side = self.resolutions[0]
        score = minmax_normalize(
            summed_cosine_similarity(self._self_rows(maps, side), self.seeds(ca).float()),
            dims=(-1, ))
        for r in self.resolutions[1:]:
            prior = _resize(score.view(b, c, side, side), (r, r)).flatten(2)
            background = ~otsu_foreground((prior * prior).flatten(0, 1)).view_as(prior)
            similarity = summed_cosine_similarity(self._self_rows(maps, r), background.float())
            score = minmax_normalize(minmax_normalize(1 - similarity, dims=(-1, ))
                                     * minmax_normalize(prior, dims=(-1, )), dims=(-1, ))
            side = r
        return score.view(b, c, side, side)

    # -- labels --------------------------------------------------------------------------------
    def forward(self, maps: AttentionMaps, images: Optional[torch.Tensor],
                class_names: Optional[Sequence[Sequence[str]]]) -> torch.Tensor:
        """Labels ``(B, H, W)`` (ALGORITHMS.md 2.3): the expansion map above ``threshold``, PAMR,
        above ``final_threshold``; a pixel two classes keep (an extension) takes the higher map."""
        maps.check_finite()
        batch = maps.batch_size
        class_names = self.name_lists(class_names)
        if len(class_names) != batch:
            raise ValueError(f'SeeDiff: {len(class_names)} class-name lists for a batch of {batch}')
        if images is None and self.pamr.num_iter > 0:
            raise ValueError('SeeDiff: PAMR refinement (pamr_iter > 0) needs the RGB images; pass '
                             'images or build SeeDiff with pamr_iter=0 (no refinement)')
        if images is not None and (images.dim() != 4 or images.shape[:2] != (batch, 3)):
            raise ValueError(f'SeeDiff: images must be ({batch}, 3, H, W) RGB, got '
                             f'{tuple(images.shape)}')
        size = tuple(images.shape[-2:]) if images is not None else tuple(maps.image_size)
        class_names = [self._segmented(names) for names in class_names]
        indices = [self.class_indices(names) for names in class_names]
        device = maps[CROSS_NAME].device
        labels = torch.full((batch, *size), self.background_index, dtype=torch.long,
                            device=device)
        if not any(indices):
            return labels
        # the dataset index of each class slot and which slots are real, built on the host and
        # copied without a host-device sync; the images are moved before any GPU work is queued
        # (a pageable copy waits for the stream: after the expansion it would hold the host)
        lookup, valid = padded_table(indices, device)
        if images is not None:
            images = images.to(device)

        ca = self.class_cross_attention(maps, class_names)
        score = minmax_normalize(_resize(self.expansion_map(maps, ca), size))
        mask = (score > self.threshold).float()
        if self.pamr.num_iter > 0:  # a PAMR output flat to rounding is no mask (all zeros)
            mask = minmax_normalize(self.pamr(images.float(), mask), flat=self.pamr_flat)
        foreground = mask > self.final_threshold
        if valid is not None:
            foreground &= valid[..., None, None]
        winner = score.masked_fill(~foreground, -1).argmax(dim=1, keepdim=True)
        claimed = foreground.any(dim=1)
        class_label = torch.gather(lookup, 1, winner.flatten(1)).view(batch, *size)
        return torch.where(claimed, class_label, labels)

    def config_dict(self) -> Dict:
        return dict(method=self.method, classes=self.classes, seed_rule=self.seed_rule,
                    alpha=self.alpha, threshold=self.threshold,
                    final_threshold=self.final_threshold, pamr_iter=self.pamr.num_iter,
                    pamr_dilations=list(self.pamr.dilations),
                    pamr_sigma_factor=self.pamr.sigma_factor, pamr_tol=self.pamr.tol,
                    pamr_flat=self.pamr_flat,
                    flat_layer_var=self.flat_layer_var, num_heads=self.num_heads,
                    token_offsets={name: offsets for name, offsets in self.token_offsets.items()
                                   if name in self.classes or name in ALWAYS_RECORDED_TOKEN_RULES},
                    prompt_templates=self.prompt_templates,
                    steps=self.steps, guidance_scale=self.guidance_scale,
                    timestep=self.timestep, noise=self.noise, ignore_index=self.ignore_index,
                    self_layers=self.self_layers)
