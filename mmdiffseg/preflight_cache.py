"""Pre-flight checks of a label cache folder (part of :mod:`mmdiffseg.preflight`): that this run
can write it, and that the labels it holds were made as this run would make them (settings and
precision). :class:`~mmdiffseg.datasets.LabelCache` finds each of these only at the first label,
once the diffusion model has loaded."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

from mmengine.config import Config

from .datasets.cache_settings import cache_folder
from .preflight_data import Missing
from .provenance import missing_model_refusal
from .registry import config_type

#: mmseg transforms a cold cache's source-index map cannot pass (the map is a 4-byte code of
#: each pixel's place in its own image): a bilinear rotation of the seg maps blends the codes,
#: a mosaic mixes four images on one 2-D canvas; cached labels pass them as class maps
LABEL_MIXING_TRANSFORMS = {'RandomRotFlip': 'rotates the seg maps bilinearly',
                           'RandomMosaic': 'mixes four images'}


def writer_settings(cfg: Config, mode: str, dtype: Optional[str]) -> Tuple[str, Optional[str]]:
    """The precision labels are made in (a prefill's ``--dtype``, else the preprocessor's) and
    the weights variant they are made from (the preprocessor's ``engine_kwargs.variant``)."""
    pre = (cfg.get('model') or {}).get('data_preprocessor') or {}
    return ((dtype if mode == 'prefill' else None) or pre.get('engine_dtype', 'float32'),
            (pre.get('engine_kwargs') or {}).get('variant'))


def unlabelled_finder(cfg: Config) -> Callable[[str], Optional[str]]:
    """``cache_dir`` -> the first training image of ``cfg`` whose label it lacks (None: it holds
    them all; ``''`` where the training data cannot be read, which the data checks name). Each
    cache is looked through once (every training image read and hashed), however many checks
    ask."""
    from .models.prefill import first_unlabelled_image
    found: Dict[str, Optional[str]] = {}

    def first_unlabelled(cache_dir: str) -> Optional[str]:
        if cache_dir not in found:
            try:
                found[cache_dir] = first_unlabelled_image(cfg, cache_dir)
            except Exception:  # noqa: BLE001  the data checks name what keeps it from loading
                found[cache_dir] = ''
        return found[cache_dir]
    return first_unlabelled


def check_cache_precision(cache_dir: str, where: str, writer: Tuple[str, Optional[str]],
                          unlabelled: Optional[Callable[[str], Optional[str]]] = None
                          ) -> List[Missing]:
    """A label cache whose labels were made in another precision, or from another weights
    variant, than this run would add (``writer``: :func:`writer_settings`;
    :class:`~mmdiffseg.datasets.LabelCache` refuses such a writer at its first label, maybe
    hours into training). ``unlabelled`` (:func:`unlabelled_finder`): for a run that only adds
    the labels the cache lacks (training); a full cache is read in any precision."""
    from .datasets.cache_settings import empty_cache_note, writer_difference
    from .datasets.label_cache import WRITER_KEY
    from .datasets.label_files import SIGNATURE_FILE
    try:
        made = json.loads((cache_folder(cache_dir) / SIGNATURE_FILE).read_text()).get(
            WRITER_KEY, {})
    except (OSError, ValueError, AttributeError):
        return []   # no folder or signature yet (an unreadable one is named at first use)
    differs = writer_difference(made, *writer)
    image = unlabelled(cache_dir) if differs and unlabelled is not None else ''
    if not differs or image is None:
        return []
    example = f' (for {image}, which has no label there)' if image else ''
    return [Missing(f'label cache {cache_dir} holds {differs[0]}{example}',
                    f'{differs[1]}, or --cfg-options {where}.cache_dir=<another folder>.'
                    + empty_cache_note(cache_folder(cache_dir)), [f'{where}.cache_dir'])]


def check_label_mixing_transforms(dataset: dict, where: str,
                                  unlabelled: Callable[[str], Optional[str]]) -> List[Missing]:
    """A training pipeline with a transform of :data:`LABEL_MIXING_TRANSFORMS` over online labels
    (its own or a wrapped dataset's ``LoadPseudoLabel``) whose cache lacks a training image's
    label (``unlabelled``: :func:`unlabelled_finder`): the label made during training would come
    out wrong, or the run stop mid-way."""
    from .models.prefill import online_dataset_cfgs
    mixing = [kind for kind in map(config_type, dataset.get('pipeline') or [])
              if kind in LABEL_MIXING_TRANSFORMS]
    if not mixing:
        return []
    caches = sorted({(step.get('cache') or {}).get('cache_dir')
                     for inner in online_dataset_cfgs(dataset) for step in inner['pipeline']
                     if config_type(step) == 'LoadPseudoLabel'} - {None})
    for cache_dir in caches:
        image = unlabelled(cache_dir)
        if image is not None:
            return [Missing(
                f'{where}.pipeline has {mixing[0]}, which {LABEL_MIXING_TRANSFORMS[mixing[0]]}: '
                'a label made during training cannot pass it'
                + (f' (the label of {image}, for one, is not in {cache_dir} yet)' if image else ''),
                'label every training image first: python tools/prefill_labels.py CONFIG (the '
                f'same --cfg-options), then train; or leave {mixing[0]} out',
                [f'{where}.pipeline'])]
    return []


def check_label_step_order(dataset: dict, where: str) -> List[Missing]:
    """Where ``LoadPseudoLabel`` sits in a train pipeline (its own or a wrapped dataset's): once,
    after the image loader, after nothing but loaders (the label is made from the image file: a
    flip or a rotation before it, same size, nothing else tells, trains on labels mirrored or
    turned against their images), and before no annotation loader (``LoadAnnotations`` after it
    replaced every generated label by the ground truth, silently)."""
    from .models.prefill import online_dataset_cfgs
    fix = 'put LoadPseudoLabel right after LoadImageFromFile and LoadImageLevelLabels'
    for inner in online_dataset_cfgs(dataset):
        kinds = [str(config_type(step)) for step in inner['pipeline']]
        at = kinds.index('LoadPseudoLabel')
        before, after = kinds[:at], kinds[at + 1:]
        moved = [kind for kind in before if not kind.startswith('Load')]
        problem = None
        if 'LoadPseudoLabel' in after:
            problem = ('has LoadPseudoLabel twice: the second would make the label of an image '
                       'already transformed', f'keep the first; {fix}')
        elif not any(k.startswith('Load') and k != 'LoadImageLevelLabels' and
                     'Annotation' not in k for k in before):   # (any loader: a user's too)
            problem = ('has no image loader before LoadPseudoLabel: the label is made from the '
                       'loaded image', fix)
        elif moved:
            problem = (f'has {moved[0]} before LoadPseudoLabel: the label is made from the image '
                       'file, so the image would be transformed and its label not',
                       f'{fix}, before {moved[0]}')
        else:
            loaders = [kind for kind in after if kind.startswith('Load') and 'Annotation' in kind]
            if loaders:
                problem = (f'has {loaders[0]} after LoadPseudoLabel: it replaces the generated '
                           'label by the dataset\'s ground truth (a weakly supervised run '
                           'trained fully supervised)', f'leave {loaders[0]} out of this pipeline')
        if problem:
            return [Missing(f'{where}.pipeline {problem[0]}', problem[1], [f'{where}.pipeline'])]
    return []


def check_one_label_cache(cfg) -> List[Missing]:
    """Train datasets naming several label caches (``ConcatDataset`` parts with different
    ``cache`` settings): one preprocessor serves one, and the first batch mixing them stopped."""
    from .models.prefill import one_label_cache
    try:
        one_label_cache(cfg, 'training')
    except KeyError:   # a cache's keys, which check_cache_keys names
        return []
    except ValueError as exc:
        return [Missing(str(exc), 'give every LoadPseudoLabel of the train datasets the same '
                        'cache settings', ['train_dataloader.dataset'])]
    return []


def check_cache_writable(cache_dir: str, where: str,
                         unlabelled: Optional[Callable[[str], Optional[str]]] = None
                         ) -> List[Missing]:
    """A label cache folder the run cannot write (a read-only mount, no permission, a file in
    its place): training and the prefill would stop at their first label, after the model
    loaded. Probed with a temporary file in the folder or, where it is still to be made, in
    the nearest folder above it. ``unlabelled`` (:func:`unlabelled_finder`): for a run that
    only adds the labels the cache lacks (training), which reads a full cache it cannot write
    (a teammate's prefill)."""
    from .apis.io import WRITE_ERRORS
    folder = cache_folder(cache_dir).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    fix = f'--cfg-options {where}.cache_dir=<a folder you can write>'
    if not existing.is_dir():
        return [Missing(f'label cache folder {cache_dir}: {existing} is a file', fix,
                        [f'{where}.cache_dir'])]
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix='.mmdiffseg-write-test')
    except OSError as exc:
        image = unlabelled(cache_dir) if unlabelled is not None else ''
        if image is None:
            return []
        reason = WRITE_ERRORS.get(exc.errno, exc.strerror or str(exc))
        example = f'; {image} has no label there yet' if image else ''
        return [Missing(f'label cache folder {cache_dir} cannot be written ({existing}: '
                        f'{reason}{example})', fix, [f'{where}.cache_dir'])]
    os.close(handle)
    os.unlink(probe)
    return []


def check_cache_revision(cfg: Config, cache_dir: str, where: str) -> List[Missing]:
    """A hub ``revision`` in the labeller's ``engine_kwargs``, which a label cache cannot tell
    apart (:func:`~mmdiffseg.datasets.cache_settings.revision_refusal`)."""
    from .datasets.cache_settings import revision_refusal
    pre = (cfg.get('model') or {}).get('data_preprocessor') or {}
    refusal = revision_refusal(pre.get('engine_kwargs'), cache_dir)
    return [Missing(*refusal, [f'{where}.model', 'model.data_preprocessor.engine_kwargs.revision'])
            ] if refusal else []


def check_cache_settings(cache: Dict, where: str) -> List[Missing]:
    """A label cache made with another model, generator config or label computation
    (:data:`~mmdiffseg.generators.base.LABELS_VERSION`) than this run's:
    :class:`~mmdiffseg.datasets.LabelCache` refuses it at the first batch, once the model and
    the data are built."""
    from .datasets.label_cache import LabelCache
    from .datasets.label_files import SIGNATURE_FILE, unsigned_labels
    fix = f'--cfg-options {where}.cache_dir=<another folder>, or delete {cache["cache_dir"]}'
    if not (cache_folder(cache['cache_dir']) / SIGNATURE_FILE).is_file():
        unsigned = unsigned_labels(cache['cache_dir'])
        return [Missing(unsigned, fix, [f'{where}.cache_dir'])] if unsigned else []
    if not isinstance(cache.get('model'), str):
        return []
    try:
        label_cache = LabelCache(cache['cache_dir'], cache['model'], cache['generator'])
    except (KeyError, TypeError, ValueError):
        return []   # the generator's options: check_generator names them
    try:
        differing = label_cache.signature_differences()
    except ValueError as err:   # an unreadable signature, named as LabelCache names it
        return [Missing(str(err), fix, [f'{where}.cache_dir'])]
    if not differing:
        return []
    missing = missing_model_refusal(cache['model'], cache['cache_dir'], differing)
    if missing:
        return [Missing(missing, f'restore the folder, or set {where}.model to where it is now',
                        [f'{where}.model'])]
    return [Missing(f'label cache {cache["cache_dir"]} holds labels made with other settings: '
                    + '; '.join(differing), fix, [f'{where}.cache_dir'])]


def check_prompt_fit(dataset: dict, where: str) -> List[Missing]:
    """Training images whose class names an online generator cannot read off their prompt (a
    class past the text encoder's 77 tokens: some 30 ADE20K names in one iSeg prompt): training
    would train each of them as all unsure (no label can be made for it), with a warning at each
    use. Read from the
    ``LoadImageLevelLabels`` file with the model's tokenizer where it is here (else the model
    check names it), once per distinct class list
    (:func:`.models.online_labeler.prompt_refusals`)."""
    from mmseg.registry import TRANSFORMS

    from .apis.builders import local_tokenizer
    from .models.online_labeler import prompt_refusals
    from .preflight_data import image_names, split_image_paths
    from .registry import MASK_GENERATORS
    steps = dataset.get('pipeline') or []
    levels = [s for s in steps if config_type(s) == 'LoadImageLevelLabels' and s.get('ann_file')]
    caches = [s.get('cache') for s in steps if config_type(s) == 'LoadPseudoLabel']
    if not levels or not caches or not isinstance(caches[0], dict):
        return []
    tokenizer = local_tokenizer(caches[0]['model'])
    if tokenizer is None:
        return []
    try:
        generator = MASK_GENERATORS.build(dict(caches[0]['generator']))
        loader = TRANSFORMS.build(dict(levels[0]))
        labels = loader.annotations()
    except Exception:  # noqa: B902  (the model, generator and label checks name what is wrong)
        return []
    images = image_names(split_image_paths(dataset))
    refused: Dict[tuple, Optional[str]] = {}
    found = []
    for image in images if images is not None else list(labels):
        names = tuple(n for n in labels.get(image, []) if n not in loader.exclude)
        if names not in refused:
            refused[names] = prompt_refusals(tokenizer, generator, [list(names)])[0]
        if refused[names]:
            found.append((image, refused[names]))
    if not found:
        return []
    image, reason = found[0]
    key = f'{where}.pipeline.{steps.index(levels[0])}'
    return [Missing(
        f'{len(found)} training image(s) name more classes than their prompt holds, e.g. '
        f'{image}: {reason}', f'list fewer classes for them in {levels[0]["ann_file"]}, or '
        'leave them out of the split (tools/pseudo_label.py names and skips such images)',
        [key])]
