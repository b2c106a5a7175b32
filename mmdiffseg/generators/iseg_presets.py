"""iSeg's layer and head lists, prompts and per-task settings (linsun449/iseg.code, ALGORITHMS.md
3.1-3.6), and our SD 1.x adaptation of the VOC tasks."""
import functools
import inspect
import logging
from typing import Dict, Mapping, Optional, Sequence

from mmengine.logging import print_log

from ..options import check_key_among, check_real, check_wholes
from ..registry import unknown_options, unknown_options_error

#: cross-attention layers read at each resolution, in forward order (``wsss/arguments.py``).
CROSS_LAYERS = {
    16: ('down_blocks.2.attentions.0.transformer_blocks.0.attn2',
         'down_blocks.2.attentions.1.transformer_blocks.0.attn2',
         'up_blocks.1.attentions.0.transformer_blocks.0.attn2',
         'up_blocks.1.attentions.1.transformer_blocks.0.attn2',
         'up_blocks.1.attentions.2.transformer_blocks.0.attn2'),
    32: ('down_blocks.1.attentions.1.transformer_blocks.0.attn2',
         'up_blocks.2.attentions.0.transformer_blocks.0.attn2',
         'up_blocks.2.attentions.1.transformer_blocks.0.attn2'),
}
SELF_LAYER = 'up_blocks.3.attentions.1.transformer_blocks.0.attn1'
#: its token grid (512 px images): the k-means clusters its pixels
SELF_RESOLUTION = 64

#: the VOC presets' hand-picked heads, indices into the layer-major concatenation of the heads of
#: :data:`CROSS_LAYERS` (``wsss/iSeg.py``); they assume SD 2.1-base's head counts (20 per layer at
#: 16x16, 10 at 32x32).
SD21_VOC_HEADS = {
    32: (22, 5, 21, 13, 8, 27, 28, 6, 25),
    16: (76, 1, 43, 17, 81, 6, 44, 27, 2, 8, 22, 20, 60, 78, 12, 83, 94, 47, 88, 96, 3, 33, 46, 52,
         77, 93, 51, 58, 0, 13, 14, 19, 34, 41, 59, 87, 16, 24, 28, 30, 32),
}

#: the class order of the released label ids (prompt order and the order the class maps meet in
#: the argmax, whose ties go to the first) where it is not the dataset's: the release's Context 59
#: ids (``data/voc_context/context_name59.py``: the VOC classes first), in mmseg's names.
RELEASED_CLASS_ORDER = {
    'context59': (
        'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
        'table', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
        'tvmonitor', 'bag', 'bed', 'bench', 'book', 'building', 'cabinet', 'ceiling', 'cloth',
        'computer', 'cup', 'door', 'fence', 'floor', 'flower', 'food', 'grass', 'ground',
        'keyboard', 'light', 'mountain', 'mouse', 'curtain', 'platform', 'sign', 'plate', 'road',
        'rock', 'shelves', 'sidewalk', 'sky', 'snow', 'bedclothes', 'track', 'tree', 'truck',
        'wall', 'water', 'window', 'wood'),
}


def released_index_order(vocabulary: str) -> tuple:
    """The classes the release's 0-based class indices name (its TagCLIP predictions for the OVS
    tasks, ``ovs/tagCLIP/clip_text.py``), background excluded: VOC's 20 and COCO's 80 in their
    datasets' order, Context's 59 in :data:`RELEASED_CLASS_ORDER`; in mmseg's names."""
    from .class_names import VOCABULARIES
    return RELEASED_CLASS_ORDER.get(vocabulary) or tuple(
        name for name in VOCABULARIES[vocabulary]['classes'] if name != 'background')


WSSS_PROMPT = 'a photograph of {classes} and other object and background, {bg_context}'
#: the OVS script drops the ', ' before the context words (kept: it is what was evaluated).
OVS_PROMPT = 'a photograph of {classes} and other object and background{bg_context}'
#: context words as the released code really uses them: an implicit string concatenation on the
#: next line is a separate statement, so only the first literal survives.
VOC_BG_CONTEXT = 'ground, land, grass, tree, building, wall, sky, lake, water'
COCO_BG_CONTEXT = 'ground, land, grass, tree, building, wall, sky, lake, water, river, sea, railway, '

#: the heads of :data:`SELF_LAYER` the release averages, picked among SD 2.1-base's 5 there
RELEASED_SELF_HEADS = (1, 2)
_COMMON = dict(timestep=100, noise_seed=1101, token_enhance=1.6, res_weights={16: 0.7, 32: 0.3},
               self_heads=RELEASED_SELF_HEADS, use_cluster=True, num_clusters=32, cluster_iters=20,
               kmeans_precision='float16', map_precision='float16', mask_size=512)
#: the released settings per task (ALGORITHMS.md 3.6); ``configs/iseg/*.py`` hold the same.
ISEG_PRESETS: Dict[str, Dict] = {
    'wsss_voc': dict(vocabulary='voc', prompt_template=WSSS_PROMPT, bg_context=VOC_BG_CONTEXT,
                     cross_heads='voc', iters=10, ent=0.015, cam_bg_thr=0.0, **_COMMON),
    'wsss_coco': dict(vocabulary='coco_object', prompt_template=WSSS_PROMPT,
                      bg_context=COCO_BG_CONTEXT, cross_heads=None, iters=10, ent=0.1,
                      cam_bg_thr=0.45, **_COMMON),
    'ovs_voc': dict(vocabulary='voc', prompt_template=OVS_PROMPT, bg_context=VOC_BG_CONTEXT,
                    cross_heads='voc', iters=8, ent=0.015, cam_bg_thr=0.0, **_COMMON),
    'ovs_context': dict(vocabulary='context59', prompt_template=OVS_PROMPT, bg_context='',
                        cross_heads=None, iters=5, ent=0.002, cam_bg_thr=0.0, **_COMMON),
    'ovs_coco_object': dict(vocabulary='coco_object', prompt_template=OVS_PROMPT,
                            bg_context=COCO_BG_CONTEXT, cross_heads=None, iters=10, ent=0.2,
                            cam_bg_thr=0.45, **_COMMON),
}
#: not released (iSeg has no ADE20K task): the many-class WSSS COCO settings (all heads, the
#: stronger entropy reduction, the 0.45 score threshold: below it a pixel is unsure, 255) with
#: ADE20K's names and no background-context words (COCO's ground, wall, sky, tree ... are ADE20K
#: classes: prompted as background they would take those classes' pixels).
ISEG_PRESETS['wsss_ade20k'] = {**ISEG_PRESETS['wsss_coco'], 'vocabulary': 'ade20k',
                               'bg_context': ''}
#: our adaptation to SD 1.x (8 heads in every layer), not released: the VOC tasks with the mean of
#: all heads where the release picks SD 2.1-base's (the COCO / Context presets average the
#: cross-attention heads; their self-attention heads (1, 2) run on SD 1.x too, where they are two
#: arbitrary heads of eight: :func:`self_heads_note`).
SD1X_HEADS = dict(cross_heads=None, self_heads=None)
ISEG_PRESETS.update({f'{task}_sd1x': {**ISEG_PRESETS[task], **SD1X_HEADS}
                     for task in ('wsss_voc', 'ovs_voc')})


#: heads of SD 2.1-base's :data:`SELF_LAYER`, among which :data:`RELEASED_SELF_HEADS` were picked
SD21_SELF_LAYER_HEADS = 5


def self_heads_note(self_heads, layers) -> list:
    """The warning for the released ``self_heads`` read on a U-Net whose :data:`SELF_LAYER` has
    not SD 2.1-base's head count (``layers``: its attention layers): valid indices there, but of
    other heads than the release picked; empty where they fit, or for heads of the user's."""
    heads = {layer.heads for layer in layers if layer.name == SELF_LAYER}
    if self_heads is None or tuple(self_heads) != RELEASED_SELF_HEADS or not heads or \
            heads == {SD21_SELF_LAYER_HEADS}:
        return []
    return [f'ISeg: self_heads={tuple(self_heads)} are heads the release picked among the '
            f'{SD21_SELF_LAYER_HEADS} of SD 2.1-base\'s {SELF_LAYER}; this U-Net\'s has '
            f'{min(heads)}, where they are other heads: set self_heads=None (--cfg-options '
            'self_heads=None) to average all heads, as the *_sd1x presets do']


def head_layout_fix(where: str = '') -> str:
    """What to change when a preset's head indices do not fit the model (error messages);
    ``where``: the generator's config key (pre-flight of a training config), else the tools'
    options and, for a training config, where the same keys go."""
    keys = ' '.join(f'{where}{"." if where else ""}{k}=None' for k in ('cross_heads', 'self_heads'))
    return (f'--cfg-options {keys} (the mean of all heads)' +
            ('' if where else " with the tools; in a training config the same keys under its "
             "label cache's generator (e.g. train_dataloader.dataset.pipeline.2.cache.generator."
             'cross_heads=None)') + '; for SD 1.x the presets configs/iseg/iseg_wsss_voc_sd1x.py '
            '/ iseg_ovs_voc_sd1x.py do this')


def applies_preset(init):
    """``ISeg.__init__`` whose ``preset=NAME`` fills each option not passed from
    ``ISEG_PRESETS[NAME]`` (``dict(type='ISeg', preset='wsss_coco')`` is that task's released
    settings); the options passed override it. The signature stays ``init``'s."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def init_with_preset(self, *args, **kwargs):
        if unknown_options(init, kwargs):
            raise unknown_options_error(type(self), kwargs)
        bound = signature.bind_partial(self, *args, **kwargs)
        name = bound.arguments.get('preset')
        if name is not None:
            if name not in ISEG_PRESETS:
                raise KeyError(f'ISeg: unknown preset {name!r}; known: {sorted(ISEG_PRESETS)}')
            for key, value in ISEG_PRESETS[name].items():
                bound.arguments.setdefault(key, value)
        return init(*bound.args, **bound.kwargs)
    return init_with_preset


def check_cross_heads(cross_heads):
    """``ISeg.cross_heads`` checked: ``None``, ``'voc'`` or ``{resolution: heads}``."""
    if cross_heads is None or cross_heads == 'voc':
        return cross_heads
    if isinstance(cross_heads, Mapping):
        heads = {int(r): check_wholes('ISeg', f'cross_heads[{r}]', v, '[0,3]', low=0)
                 for r, v in cross_heads.items()}
        empty = sorted(r for r, v in heads.items() if not v)
        if empty:
            raise ValueError(f'ISeg: cross_heads[{empty[0]}] is empty; name the heads to average '
                             'at that resolution, or leave it out (None: all heads)')
        if set(heads) - set(CROSS_LAYERS):
            raise ValueError(f'ISeg: cross_heads has resolutions {sorted(heads)}; only '
                             f'{sorted(CROSS_LAYERS)} are read')
        return heads
    raise ValueError(f"ISeg: cross_heads must be None, 'voc' or {{resolution: [heads]}}, "
                     f'got {cross_heads!r}')


def check_prompt_names(prompt_names, classes) -> Dict[str, str]:
    """``ISeg.prompt_names`` checked: ``{class: the word(s) the prompt says for it}``, each key
    one of ``classes`` (a misspelt key would leave its class at its own name, unsaid; the
    vocabulary's classes count: a recorded config holds its words for all of them)."""
    names = dict(prompt_names or {})
    for name, word in names.items():
        check_key_among('ISeg', 'prompt_names', name, classes, 'classes')
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f'ISeg: prompt_names[{name!r}] must be the words the prompt says '
                             f'for that class, got {word!r}')
    return names


def check_bg_context(bg_context, words: Sequence[str]) -> str:
    """``ISeg.bg_context`` checked: a string; a warning names its comma-separated words that
    name a class (``words``: the classes' prompt words), which, prompted as background, draw
    that class's attention (VOC's context words on Cityscapes: building, wall, sky)."""
    if not isinstance(bg_context, str):
        raise ValueError(f"ISeg: bg_context must be a string (the prompt's context words; '' "
                         f'for none), got {bg_context!r}')
    named = {word.lower() for word in words}
    shared = [word.strip() for word in bg_context.split(',') if word.strip().lower() in named]
    if shared:
        print_log(f'ISeg: the background-context words {", ".join(shared)} (bg_context) name '
                  'classes of this label set: prompted as background they draw those classes\' '
                  "attention (the presets' words suit VOC's and COCO's classes); set "
                  "bg_context='' (--cfg-options bg_context=''), as configs/iseg/"
                  'iseg_wsss_ade20k.py does for ADE20K', logger='current', level=logging.WARNING)
    return bg_context


def check_res_weights(res_weights) -> Dict[int, float]:
    """``ISeg.res_weights`` checked: ``{resolution: weight}`` over :data:`CROSS_LAYERS`'
    resolutions, non-negative, not all zero (``None``: the released 0.7 / 0.3, step 1)."""
    if res_weights is not None and not isinstance(res_weights, Mapping):
        raise ValueError(f'ISeg: res_weights must be {{resolution: weight}}, e.g. '
                         f'{{16: 0.7, 32: 0.3}} (released), got {res_weights!r}')
    weights = {int(r): check_real('ISeg', f'res_weights[{r}]', w) for r, w in
               (res_weights if res_weights is not None else {16: 0.7, 32: 0.3}).items()}
    if (set(weights) - set(CROSS_LAYERS) or not any(w > 0 for w in weights.values())
            or any(w < 0 for w in weights.values())):
        raise ValueError(f'ISeg: res_weights must weight resolutions {sorted(CROSS_LAYERS)} with '
                         f'non-negative weights, not all zero; got {weights}')
    return weights


def heads_at(cross_heads, resolution: int) -> Optional[tuple]:
    """The heads a checked ``cross_heads`` averages at ``resolution`` (``None``: all)."""
    if cross_heads is None:
        return None
    if cross_heads == 'voc':
        return SD21_VOC_HEADS[resolution]
    return cross_heads.get(resolution)
