"""Pre-flight check that a config's class lists agree (part of :mod:`mmdiffseg.preflight`).

A config names its classes in up to five places: the dataset (its class's ``METAINFO``, or
``metainfo=dict(classes=...)``), ``LoadImageLevelLabels.classes`` (the class a ground-truth
value or a label-file name stands for), the generator whose label indices the online labels
are (a label cache's, or ``DiffusionSegmentor``'s), and the decode head's ``num_classes`` with
its ``class_weight``. A label index must mean one class in all of them: otherwise training fits
wrong targets without an error, or stops at its first iteration once the diffusion model has
loaded (an index past the head's classes, a class weight of another length). Checked with them:
what makes and reads those labels, i.e. the preprocessor an online pipeline needs and its
values, unlabelled segment ids where class indices are trained or scored, and the image-level
labels a ``DiffusionSegmentor`` generator of classes reads.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

from .preflight_data import Missing
from .registry import config_type

#: where a list is shown whole; longer ones by their first names and their count
SHOWN = 8


def dataset_classes(dataset: dict) -> Optional[List[str]]:
    """The classes a dataset config reads its labels as: ``metainfo['classes']`` (an empty list
    too: mmseg then maps every label to 255), else its registered class's ``METAINFO``; None
    where neither says (a wrapper, an unknown type)."""
    from mmseg.registry import DATASETS
    given = (dataset.get('metainfo') or {}).get('classes')
    if given is not None:
        return list(given)
    kind = dataset.get('type')
    cls = DATASETS.get(kind) if isinstance(kind, str) else kind if isinstance(kind, type) else None
    classes = (getattr(cls, 'METAINFO', None) or {}).get('classes')
    return list(classes) if classes else None


def describe(classes: Sequence[str]) -> str:
    """A class list by its set name (``'voc'``) where it is one, else its names."""
    from .datasets.class_names import DATASET_CLASSES
    name = next((n for n, listed in DATASET_CLASSES.items() if _same(listed, classes)), None)
    if name is not None:
        return f"{name!r} ({len(classes)} classes)"
    shown = list(classes) if len(classes) <= SHOWN else [*classes[:SHOWN - 2], '...']
    return f'{shown} ({len(classes)} classes)'


def _name(name) -> str:
    """A class name as compared: without surrounding spaces (mmseg's ADE20K ``'bed '``), and
    ``'Background'`` (mmseg's LIP) as the ``'background'`` the generators require."""
    name = str(name).strip()
    return 'background' if name.lower() == 'background' else name


def _same(a: Sequence[str], b: Sequence[str]) -> bool:
    """Equal lists of names (:func:`_name`)."""
    return [_name(n) for n in a] == [_name(n) for n in b]


def _first_difference(found: Sequence[str], expected: Sequence[str], found_in: str = 'there',
                      expected_in: str = 'in the dataset') -> str:
    """The first index whose names differ, as a clause naming where each list is."""
    for index, (a, b) in enumerate(zip(found, expected)):
        if _name(a) != _name(b):
            return f'; index {index} is {a!r} {found_in} but {b!r} {expected_in}'
    return ''


def generator_classes(generator: dict) -> Optional[List[str]]:
    """The classes the labels of a generator config index (``[]``: unlabelled segment ids, as
    DiffSeg's without ``classes``); None for a generator that does not build (pre-flight's
    option check names why)."""
    from .registry import MASK_GENERATORS
    try:
        built = MASK_GENERATORS.build(dict(generator))
    except Exception:  # noqa: BLE001  (check_generator reports it)
        return None
    return list(getattr(built, 'classes', None) or [])


def _mismatch(key: str, what: str, found: List[str], expected: List[str], source: str,
              fix: str) -> Missing:
    return Missing(f'{key} ({what}) has the classes {describe(found)}, but the dataset reads its '
                   f'labels as {describe(expected)} ({source}){_first_difference(found, expected)}'
                   ': a label index would mean another class in each', fix, [key])


def check_dataset_classes(dataset: dict, where: str) -> List[Missing]:
    """``LoadImageLevelLabels.classes`` and the label cache's generator of the dataset's
    pipeline against the dataset's classes."""
    from .datasets.class_names import resolve_classes
    expected = dataset_classes(dataset)
    if expected is None:
        return []
    if expected == []:
        return [Missing(f'{where}.metainfo.classes is empty: mmseg then maps every label value '
                        'to 255 (ignored), so nothing would be learnt or scored',
                        f"list the classes ({where}.metainfo=dict(classes=[...])), or remove "
                        f"{where}.metainfo to read them as {dataset.get('type')} does",
                        [f'{where}.metainfo'])]
    source = f'{where}.metainfo' if (dataset.get('metainfo') or {}).get('classes') else \
        f"{dataset.get('type')}'s METAINFO"
    missing = []
    for index, step in enumerate(dataset.get('pipeline') or []):
        if not isinstance(step, dict):
            continue
        key = f'{where}.pipeline.{index}'
        if config_type(step) == 'LoadImageLevelLabels' and step.get('classes') is not None:
            try:
                found = resolve_classes(step['classes'])
            except KeyError:  # named by check_image_level_labels
                continue
            if not _same(found, expected):
                missing.append(_mismatch(
                    f'{key}.classes', 'the class each image-level name or ground-truth value '
                    'stands for', found, expected, source,
                    f"set {key}.classes to the dataset's classes, in their order"))
        generator = ((step.get('cache') or {}).get('generator')
                     if config_type(step) == 'LoadPseudoLabel' else None)
        found = generator_classes(generator) if isinstance(generator, dict) else None
        if found == []:
            missing.append(Missing(
                f'{key}.cache.generator makes unlabelled segment ids (no classes), which '
                'training would read as class indices of the dataset',
                f"give it the dataset's classes, in their order ({key}.cache.generator."
                'classes=[...]: DiffSeg then names its segments)', [f'{key}.cache.generator']))
        elif found is not None and not _same(found, expected):
            missing.append(_mismatch(
                f'{key}.cache.generator', 'the classes the online labels index', found, expected,
                source, f"give the generator the dataset's classes, in their order "
                f"({key}.cache.generator.classes=[...]; iSeg: also vocabulary=None for names "
                "outside its vocabulary), or the dataset the generator's (metainfo=dict("
                'classes=[...]))'))
    return missing


def check_model_classes(model: dict, datasets: List[Tuple[str, dict]]) -> List[Missing]:
    """What the model needs of the datasets (config key, dataset config) it reads: the heads'
    ``num_classes`` and class weights (Mask2Former's ``loss_cls``: one more, the no-object
    class; ``loss_decode``) and ``DiffusionSegmentor``'s generator against each dataset's
    classes (once per class list) and its engine options, and the preprocessor that makes
    online labels where a pipeline asks for them (``LoadPseudoLabel``)."""
    missing, seen = _online_preprocessor(model, datasets), []
    if config_type(model) == 'DiffusionSegmentor':
        missing += _labeller_options(model, 'model', 'batch_size')
    for where, dataset in datasets:
        classes = dataset_classes(dataset)
        if not classes or any(_same(classes, other) for _, other in seen):
            continue
        if seen:  # the first one (training's) is what the model learns: a later one differs
            first, expected = seen[0]
            difference = _first_difference(classes, expected, f'in {where}',
                                           'in ' + first.split(' (')[0])
            missing.append(Missing(
                f'{where} has the classes {describe(classes)}, but {first}, which the model '
                f'learns, has {describe(expected)}{difference}: its scores would compare '
                'another class with each prediction',
                f'give {where} the classes of {first}, in their order '
                f'({where}.metainfo=dict(classes=[...]))', [f'{where}.metainfo']))
            continue
        seen.append((where, classes))
        for key, head in _heads(model):
            count = head.get('num_classes')
            if isinstance(count, int) and count != len(classes):
                missing.append(Missing(
                    f'{key}.num_classes is {count}, but {where} has {describe(classes)}',
                    f'--cfg-options {key}.num_classes={len(classes)}, and class weights of its '
                    'loss to match', [f'{key}.num_classes']))
                continue
            missing += _class_weights(key, head, classes, where)
        missing += _segmentor_generator(model, classes, where)
    return missing


def _class_weights(key: str, head: dict, classes: List[str], where: str) -> List[Missing]:
    """The ``class_weight`` lists of a head's losses of another length than its classes."""
    mask_former = 'MaskFormer' in str(head.get('type')) or 'Mask2Former' in str(head.get('type'))
    losses = [('loss_cls', head.get('loss_cls'), 1 if mask_former else 0)]
    decode = head.get('loss_decode')
    losses += [(f'loss_decode.{i}' if isinstance(decode, (list, tuple)) else 'loss_decode', loss, 0)
               for i, loss in enumerate(decode if isinstance(decode, (list, tuple)) else [decode])]
    missing = []
    for name, loss, extra in losses:
        weights = loss.get('class_weight') if isinstance(loss, dict) else None
        if isinstance(weights, (list, tuple)) and len(weights) != len(classes) + extra:
            missing.append(Missing(
                f'{key}.{name}.class_weight has {len(weights)} weights, but {where} has '
                f'{describe(classes)}' + (' and the no-object class' if extra else ''),
                f'set {key}.{name}.class_weight to {len(classes) + extra} weights, a weight per '
                'class' + (', then the no-object one' if extra else '') +
                f' (in the config: [1.0] * {len(classes)}' + (' + [0.1])' if extra else ')'),
                [f'{key}.{name}.class_weight']))
    return missing


def _segmentor_generator(model: dict, classes: List[str], where: str) -> List[Missing]:
    """``DiffusionSegmentor``'s generator: the dataset's classes, and the image-level labels a
    generator of classes reads (iSeg, DiffSeg naming its segments)."""
    generator = model.get('generator') if config_type(model) == 'DiffusionSegmentor' else None
    found = generator_classes(generator) if isinstance(generator, dict) else None
    if not found:
        return []
    if not _same(found, classes):
        return [_mismatch('model.generator', 'the classes its labels index', found, classes,
                          where, "give the generator the dataset's classes, in their order "
                          '(model.generator.classes=[...])')]
    if not model.get('use_image_labels'):
        return [Missing('model.generator names classes, which it reads from each image\'s '
                        'image-level labels, but model.use_image_labels is off: it would stop '
                        'at the first image', '--cfg-options model.use_image_labels=True, with '
                        'LoadImageLevelLabels and PackPseudoLabelInputs in the test pipeline',
                        ['model.use_image_labels'])]
    return []


def check_segment_scoring(model: dict, evaluators: Sequence[Tuple[str, object]]) -> List[Missing]:
    """A ``DiffusionSegmentor`` of unlabelled segment ids (DiffSeg without ``classes``) scored by
    a metric of class indices (``IoUMetric``, ``PseudoLabelMetric``): segment k is not class k,
    so its mIoU is that of arbitrary names, near 0 and silent. Such ids are scored after a
    Hungarian matching to the ground truth (DiffSeg's protocol, ``HungarianMatchedIoU``)."""
    generator = model.get('generator') if config_type(model) == 'DiffusionSegmentor' else None
    if not isinstance(generator, dict) or generator_classes(generator) != []:
        return []
    missing = []
    for key, evaluator in evaluators:
        metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
        for i, metric in enumerate(metrics):
            kind = config_type(metric)
            if kind in ('IoUMetric', 'PseudoLabelMetric', 'CityscapesMetric'):
                where = key if metrics is not evaluator else f'{key}.{i}'
                missing.append(Missing(
                    f'{where} is {kind}, which scores class indices, but model.generator makes '
                    'unlabelled segment ids (segment k is not class k): its mIoU would mean '
                    'nothing', f'score segments after matching them to the ground truth: '
                    f"{key}=dict(type='HungarianMatchedIoU') (the dataset's class count; as "
                    'configs/mask2former/diffseg-sd14_cityscapes27-unsupervised-512x512.py), '
                    "or name the segments: model.generator.classes=[the dataset's "
                    'classes] with model.use_image_labels=True', [where]))
    return missing


def check_matched_class_count(evaluators: Sequence[Tuple[str, object]],
                              datasets: List[Tuple[str, dict]]) -> List[Missing]:
    """A ``HungarianMatchedIoU`` whose ``num_classes`` is not the class count of the dataset it
    scores (``val_evaluator`` that of ``val_dataloader``): refused by the metric only after the
    whole evaluation ran, so named before the run starts."""
    missing = []
    for key, evaluator in evaluators:
        loader = key.replace('_evaluator', '_dataloader')
        classes = next((found for where, dataset in datasets if where.startswith(loader)
                        for found in [dataset_classes(dataset)] if found), None)
        metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
        for i, metric in enumerate(metrics):
            count = metric.get('num_classes') if isinstance(metric, dict) else None
            if config_type(metric) != 'HungarianMatchedIoU' or not isinstance(count, int) or \
                    not classes or count == len(classes):
                continue
            where = key if metrics is not evaluator else f'{key}.{i}'
            missing.append(Missing(
                f'{where}.num_classes is {count}, but {loader}\'s dataset has '
                f'{describe(classes)}: the scores would be taken over another class count',
                f'--cfg-options {where}.num_classes={len(classes)}, or leave it out to take the '
                "dataset's", [f'{where}.num_classes']))
    return missing


def _online_preprocessor(model: dict, datasets: List[Tuple[str, dict]]) -> List[Missing]:
    """A pipeline's ``LoadPseudoLabel`` needs ``DiffusionLabelPreprocessor``, which makes the
    labels: under another preprocessor every target stays 255 and the loss 0, silently."""
    preprocessor = model.get('data_preprocessor') or {}
    kind = preprocessor.get('type')
    if not model:
        return []
    if config_type(preprocessor) == 'DiffusionLabelPreprocessor':
        return _labeller_options(preprocessor)
    return [Missing(f'{where}.pipeline.{i} (LoadPseudoLabel) asks for online labels, but '
                    f'model.data_preprocessor is {kind!r}, which does not make them: every '
                    'target would be 255 (ignored) and the loss 0',
                    '--cfg-options model.data_preprocessor.type=DiffusionLabelPreprocessor (it '
                    'takes SegDataPreProcessor\'s options and engine_dtype, label_batch_size; '
                    'as the ...-iseg-online configs)', ['model.data_preprocessor'])
            for where, dataset in datasets for i, step in enumerate(dataset.get('pipeline') or [])
            if config_type(step) == 'LoadPseudoLabel'][:1]


def check_prefill_labeller(cfg, dtype: Optional[str]) -> List[Missing]:
    """The preprocessor's labeller options a prefill reads (``--dtype`` replaces its
    ``engine_dtype``): its labeller refused them with a traceback."""
    pre = dict(((cfg.get('model') or {}).get('data_preprocessor')) or {})
    if config_type(pre) != 'DiffusionLabelPreprocessor':
        return []
    if dtype is not None:
        pre.pop('engine_dtype', None)
    return _labeller_options(pre)


def _labeller_options(owner: dict, where: str = 'model.data_preprocessor',
                      batch_key: str = 'label_batch_size') -> List[Missing]:
    """The labeller's values a ``DiffusionLabelPreprocessor`` (or, ``where='model'``,
    ``batch_key='batch_size'``, a ``DiffusionSegmentor``) holds, which it refuses only once the
    runner builds it, or the diffusion model has loaded."""
    from .attention.loading import DTYPES
    missing = []
    dtype, batch = owner.get('engine_dtype'), owner.get(batch_key)
    if dtype is not None and dtype not in DTYPES:
        missing.append(Missing(f'{where}.engine_dtype is {dtype!r}',
                               f'one of {sorted(DTYPES)} (--cfg-options '
                               f'{where}.engine_dtype=float16)', [f'{where}.engine_dtype']))
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        missing.append(Missing(f'{where}.{batch_key} is {batch!r}',
                               'a whole number of images, at least 1 (--cfg-options '
                               f'{where}.{batch_key}=4)', [f'{where}.{batch_key}']))
    return missing + check_engine_kwargs(owner, where)


def check_engine_kwargs(owner: dict, key: str) -> List[Missing]:
    """``owner.engine_kwargs`` (a labeller's engine options) as the engine checks them before
    loading the model: a misspelt key, a mistyped ``compile_unet`` / ``chunk_bytes`` /
    ``map_backend``."""
    from .attention.loading import check_engine_options
    try:
        check_engine_options(dict(owner.get('engine_kwargs') or {}))
    except ValueError as err:
        return [Missing(f'{key}.engine_kwargs: {err}', f'correct {key}.engine_kwargs (in the '
                        'config, or --cfg-options)', [f'{key}.engine_kwargs'])]
    return []


def _heads(model: dict) -> Iterator[Tuple[str, dict]]:
    for name in ('decode_head', 'auxiliary_head'):
        heads = model.get(name)
        if isinstance(heads, dict):
            yield f'model.{name}', heads
        elif isinstance(heads, (list, tuple)):
            yield from ((f'model.{name}.{i}', h) for i, h in enumerate(heads)
                        if isinstance(h, dict))
