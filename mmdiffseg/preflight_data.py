"""Pre-flight checks of the data settings (part of :mod:`mmdiffseg.preflight`).

Dataset folders and split files, each missing one with the fix that makes it (real data to
download, a generated folder to write, a ``data_root`` one folder off), and the image-level label
file of ``LoadImageLevelLabels``: valid JSON, an entry for every image of the split, known class
names. Cheap: the split is listed by the dataset class itself (``lazy_init``, no image is read).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .names import nearest
from .preflight_images import unreadable_images
from .registry import config_type

DATA_GUIDE = 'docs/data.md'
ELSEWHERE = '; or set data_root (and data_prefix) of the entries above to where yours is'
VOC_PREPARE = ('python tools/dataset_converters/voc_aug.py {devkit} '
               '--sbd {devkit.parent}/benchmark_RELEASE')
VOC_FIX = ('download VOC 2012 trainval and SBD and unpack them into {devkit.parent} (' +
           DATA_GUIDE + '; skip what is there), then ' + VOC_PREPARE)
ADE_FIX = ('download http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip, then '
           'unzip ADEChallengeData2016.zip -d {parent} (' + DATA_GUIDE + ')')
CITYSCAPES_DOWNLOAD = ('download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip '
                       '(https://www.cityscapes-dataset.com/downloads/), unzip them into {root}')
CITYSCAPES_FIX = (CITYSCAPES_DOWNLOAD + " and run mmseg's cityscapes.py converter (" + DATA_GUIDE
                  + ')')
COCOSTUFF_FIX = ('download http://images.cocodataset.org/zips/val2017.zip and '
                 'http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/'
                 'stuffthingmaps_trainval2017.zip, unzip them into {root}/images and '
                 '{root}/annotations, and put the curated list Coco164kFull_Stuff_Coarse_7.txt '
                 'of IIC / PiCIE / STEGO in {root}/curated/val2017 (' + DATA_GUIDE + ')')
SYNTHETIC_FIX = 'python tools/synthesize.py ... --out {out} (docs/tools.md, "Offline generation")'
PSEUDO_FIX = 'python tools/pseudo_label.py ... --out {out} (the command: ' + DATA_GUIDE + ')'
OTHER_DATA_FIX = 'prepare it as ' + DATA_GUIDE + ' says'
#: folders a data_root set one level too high holds
DATASET_FOLDERS = ('VOC2012', 'ADEChallengeData2016')
WHAT = {'ann_file': 'split file', 'img_path': 'folder', 'seg_map_path': 'folder'}
EXAMPLES = 3
#: unreadable images named in full (each costs a rerun of the check to find otherwise)
UNREADABLE_NAMED = 50


@dataclass
class Missing:
    """One problem (most often a missing piece): what it is, which config entries need it, how to
    fix it."""
    what: str
    fix: str
    where: List[str] = field(default_factory=list)


def _join(root: str, path: str) -> Path:
    return Path(path) if not root or Path(path).is_absolute() else Path(root, path)


def _holder(path: Path, folder: str) -> Optional[Path]:
    """The folder that holds ``folder`` in ``path`` (None when ``path`` does not go through one)."""
    return Path(*path.parts[:path.parts.index(folder)]) if folder in path.parts else None


def data_fix(dataset: dict, path: Path, key: str) -> str:
    """How to make ``path``, the ``key`` (``data_root``, ``ann_file``, ``img_path`` or
    ``seg_map_path``) of ``dataset``: from the dataset type and which folder the path is in."""
    kind = str(dataset.get('type', ''))
    root = dataset.get('data_root') or ''
    if kind.startswith('Synthetic'):
        return SYNTHETIC_FIX.format(out=root or path.parent) + ELSEWHERE
    if kind.startswith('PseudoLabel') and key == 'seg_map_path':
        out = path.parent if path.name == 'SegmentationClass' else path
        return PSEUDO_FIX.format(out=out) + ELSEWHERE
    written_split = _holder(path, 'ImageSets') if key == 'ann_file' else None
    if kind.startswith('PseudoLabel') and written_split is not None and \
            _holder(path, 'VOC2012') is None:  # the split file the tool writes beside its labels
        return PSEUDO_FIX.format(out=written_split) + ELSEWHERE
    if 'VOC2012' in path.parts or 'VOC' in kind:
        devkit = _holder(path, 'VOC2012') or Path('data/VOCdevkit')
        return VOC_FIX.format(devkit=devkit) + ELSEWHERE
    if 'ADEChallengeData2016' in path.parts or 'ADE20K' in kind:
        return ADE_FIX.format(parent=_holder(path, 'ADEChallengeData2016') or 'data/ade') + \
            ELSEWHERE
    if kind == 'Cityscapes27Dataset':  # reads the *_labelIds.png as shipped: no converter
        return (CITYSCAPES_DOWNLOAD.format(root=root or 'data/cityscapes') + f' ({DATA_GUIDE})'
                + ELSEWHERE)
    if 'cityscapes' in (part.lower() for part in path.parts) or 'Cityscapes' in kind:
        return CITYSCAPES_FIX.format(root=root or 'data/cityscapes') + ELSEWHERE
    if 'coco_stuff164k' in path.parts or 'COCOStuff' in kind:
        return COCOSTUFF_FIX.format(root=root or 'data/coco_stuff164k') + ELSEWHERE
    return OTHER_DATA_FIX + ELSEWHERE


def _one_level_off(root: str, missing: Sequence[str]) -> Optional[Tuple[Path, str]]:
    """The folder ``root`` should be, with the reason, where it looks one folder off: a
    sub-folder or the parent holds the first ``missing`` path, or a sub-folder is named like a
    dataset root (``VOC2012/``)."""
    if not root or Path(missing[0]).is_absolute():
        return None
    below = [d for d in Path(root).iterdir() if d.is_dir()]
    for folder in below + [Path(root).parent]:
        if Path(folder, missing[0]).exists():
            return folder, f'{missing[0]} is in {folder}, not in {root}'
    named = next((d for d in below if d.name in DATASET_FOLDERS), None)
    return named and (named, f'it holds {named.name}/ but not {", ".join(missing)}')


def _reads_labels(dataset: dict) -> bool:
    """Whether the pipeline reads the label maps (``LoadAnnotations``, or image-level labels
    taken from them)."""
    return any(
        config_type(step) == 'LoadAnnotations' or
        (config_type(step) == 'LoadImageLevelLabels' and step.get('ann_file') is None)
        for step in dataset.get('pipeline', []) if isinstance(step, dict))


def check_dataset(dataset: dict, where: str) -> List[Missing]:
    """Data root, split file and the image / label folders the pipeline reads."""
    root = dataset.get('data_root') or ''
    kind = dataset.get('type', 'dataset')
    if root and not Path(root).is_dir():
        return [Missing(f'{kind} data root {root} does not exist',
                        data_fix(dataset, Path(root), 'data_root'), [where])]
    reads_labels = _reads_labels(dataset)
    prefixes = dict(dataset.get('data_prefix') or {})
    needed = {'ann_file': dataset.get('ann_file'), 'img_path': prefixes.get('img_path'),
              'seg_map_path': prefixes.get('seg_map_path') if reads_labels else None}
    missing = {key: path for key, path in needed.items() if path and not (
        _join(root, path).is_file() if key == 'ann_file' else _join(root, path).is_dir())}
    if not missing:
        return []
    off = _one_level_off(root, list(missing.values()))
    if off:
        return [Missing(f'{kind} data root {root} looks one folder off: {off[1]}',
                        f'--cfg-options {where}.data_root={off[0]}', [where])]
    return [Missing(f'{kind} {WHAT[key]} {_join(root, path)} not found',
                    data_fix(dataset, _join(root, path), key), [where])
            for key, path in missing.items()]


def list_dataset(dataset: dict) -> Tuple[Any, Optional[List[dict]], Optional[Exception]]:
    """The dataset (built lazily, no pipeline) and its entries (``img_path``, ``seg_map_path``,
    ...) as the dataset class itself lists them, no image read; or why it cannot list them
    (:func:`listing_problem` says it)."""
    from mmseg.registry import DATASETS
    try:
        built = DATASETS.build(dict(dataset, pipeline=[], lazy_init=True))
        return built, built.load_data_list(), None
    except Exception as err:  # noqa: BLE001  (named with the dataset's key)
        return None, None, err


def listing_problem(dataset: dict, where: str, error: Exception) -> Missing:
    """Why the dataset at ``where`` cannot list its images, with the fix: mmseg's VOC and
    Context datasets assert a split file with no message."""
    kind = dataset.get('type', 'dataset')
    if isinstance(error, AssertionError) and not str(error):
        return Missing(f'{kind} cannot list its images: it needs a split file (ann_file), and '
                       f'{where}.ann_file is {dataset.get("ann_file")!r}',
                       f'set {where}.ann_file to a file listing the image names, one per line '
                       "(VOC's ImageSets/Segmentation/train.txt); for a folder without one, "
                       "type='BaseSegDataset' with img_suffix and seg_map_suffix", [where])
    return Missing(f'{kind} cannot list its images: {type(error).__name__}: {error}',
                   f'correct the settings of {where} it names', [where])


def split_image_paths(dataset: dict) -> Optional[List[str]]:
    """The image paths ``dataset`` lists, by the dataset class itself; None where it cannot
    list them."""
    data_list = list_dataset(dataset)[1]
    return None if data_list is None else [str(info['img_path']) for info in data_list]


def image_names(paths: Optional[List[str]]) -> Optional[List[str]]:
    """The names of images (file stems), as ``LoadImageLevelLabels`` looks them up."""
    return None if paths is None else [Path(path).stem for path in paths]


def check_listed_files(dataset: dict, where: str) -> List[Missing]:
    """The image of every entry of the split, and its label map where the pipeline reads
    them: a split file (``ann_file``) naming an image that is not there would stop the run with a
    traceback when it reaches that image, maybe hours in. Run once the folders are there
    (:func:`check_dataset`)."""
    from .apis.folders import same_name_image
    from .datasets.generated import UnfinishedJobFolder
    _, data_list, error = list_dataset(dataset)
    kind = dataset.get('type', 'dataset')
    if isinstance(error, UnfinishedJobFolder):
        return [Missing(str(error), "finish the tool's run (the same command resumes it)",
                        [where])]
    if error is not None and reads_generated_labels(dataset):  # a folder the run would refuse
        return [Missing(str(error), f'correct what it names: {where}.data_prefix (img_path, '
                        'seg_map_path) or the label folder (made by tools/pseudo_label.py or '
                        'tools/synthesize.py with the classes of this dataset)', [where])]
    if error is not None:
        return [listing_problem(dataset, where, error)]
    if data_list == []:  # mmengine would stop at the first batch on an empty concatenation
        listing = Path(_listing(dataset))
        if dataset.get('ann_file'):
            return [Missing(f'{kind}: the split file {listing} lists no images',
                            'write the names of its images in it, one per line, without '
                            'suffix', [where])]
        return [Missing(f'{kind}: the image folder {listing} holds no images (with the '
                        "dataset's img_suffix)", f'put the images there ('
                        f'{data_fix(dataset, listing, "img_path")}), or set {where}.img_suffix '
                        'to their suffix', [where])]
    data_list = data_list or []
    keys = ('img_path', 'seg_map_path') if _reads_labels(dataset) else ('img_path',)
    missing = []
    for key in keys:
        absent = [str(info[key]) for info in data_list
                  if info.get(key) and not Path(info[key]).is_file()]
        if not absent:
            continue
        fix = data_fix(dataset, Path(absent[0]), key)
        named = same_name_image(absent[0]) if key == 'img_path' else None
        if named:
            fix = f'the images are named {named.name!r}: set {where}.img_suffix={named.suffix!r}'
        elif dataset.get('ann_file'):
            fix = (f'put the missing files there ({fix}), or remove their names from the split '
                   f'file {_listing(dataset)}')
        missing.append(Missing(
            f'{kind}: {len(absent)} of the {len(data_list)} '
            f'{"images" if key == "img_path" else "label maps"} of the split ({_listing(dataset)}) '
            f'are not there (e.g. {_examples(absent)})', fix, [where]))
    unreadable = unreadable_images(str(info['img_path']) for info in data_list
                                   if info.get('img_path') and Path(info['img_path']).is_file())
    if unreadable:
        names = [Path(path).name for path, _ in unreadable[:UNREADABLE_NAMED]]
        more = len(unreadable) - len(names)
        missing.append(Missing(
            f'{kind}: {len(unreadable)} of the {len(data_list)} images of the split '
            f'({_listing(dataset)}) are no image OpenCV reads (e.g. {unreadable[0][0]!r}: '
            f'{unreadable[0][1]})' + (f'; they are {", ".join(names)}'
                                      + (f' and {more} more' if more > 0 else '')
                                      if len(unreadable) > 1 else ''),
            'replace them with the images, or remove them' + (
                f' (their names from the split file {_listing(dataset)})'
                if dataset.get('ann_file') else ''), [where]))
    return missing


def reads_generated_labels(dataset: dict) -> bool:
    """Whether ``dataset`` is one of mmdiffseg's generated-label datasets, which refuse a label
    folder that does not match their images and classes when listing them."""
    from mmseg.registry import DATASETS
    from .datasets.generated import GeneratedLabelDataset
    kind = dataset.get('type')
    cls = DATASETS.get(kind) if isinstance(kind, str) else kind
    return isinstance(cls, type) and issubclass(cls, GeneratedLabelDataset)


def _listing(dataset: dict) -> str:
    root = dataset.get('data_root') or ''
    if dataset.get('ann_file'):
        return str(_join(root, dataset['ann_file']))
    return str(_join(root, (dataset.get('data_prefix') or {}).get('img_path', '')))


def _shared_stems(paths: List[str], ann_file: str, where: str) -> List[Missing]:
    """Images of the split (``paths``) in different sub-folders with one file name
    (``dog/001.jpg``, ``cat/001.jpg``): ``LoadImageLevelLabels`` looks labels up by name
    without suffix, so each would take the one entry's classes, silently."""
    by_stem: Dict[str, List[str]] = {}
    for path, stem in zip(paths, image_names(paths)):
        by_stem.setdefault(stem, []).append(path)
    shared = [paths for paths in by_stem.values() if len(set(paths)) > 1]
    if not shared:
        return []
    return [Missing(
        f'image-level labels {ann_file} are looked up by file name without suffix, but '
        f'{len(shared)} name(s) of the split belong to several images (e.g. '
        f'{" and ".join(shared[0][:2])}): each would take that one entry\'s classes',
        'give the images distinct file names (and their entries in the label file)', [where])]


def _examples(names: Sequence[str]) -> str:
    return ', '.join(map(repr, names[:EXAMPLES])) + (', ...' if len(names) > EXAMPLES else '')


def unknown_names(labels: Dict[str, list], classes: Sequence[str]
                  ) -> Optional[Tuple[int, str, str]]:
    """The class names of image-level ``labels`` (image -> names) not in ``classes``: (how many,
    each with its images and the nearest class, the edits that correct them); None when all
    are known."""
    from .datasets.class_names import spelled_as
    unknown: Dict[str, List[str]] = {}
    for image, names in labels.items():
        for name, spelled in zip(names, spelled_as(names, classes)):  # 'bed' is ADE20K's 'bed '
            if spelled not in classes:
                unknown.setdefault(name, []).append(image)
    if not unknown:
        return None
    shown = list(unknown)[:5]
    near = {name: nearest(name, classes) for name in shown}
    listed = '; '.join(
        f'{name!r} ({len(unknown[name])} image(s), e.g. {_examples(unknown[name])})' +
        (f' (did you mean {near[name]!r}?)' if near[name] else '') for name in shown)
    edits = ', '.join(f'{name!r} -> {near[name]!r}' if near[name] else f'drop {name!r}' + (
        ' (no class here: pixels of no listed class are its own)'
        if name.strip().lower() == 'background' else '') for name in shown)
    if len(unknown) > len(shown):
        listed, edits = f'{listed}; and {len(unknown) - len(shown)} more', f'{edits}, ...'
    return len(unknown), listed, edits


def _unknown_names(labels: Dict[str, list], classes: Sequence[str], ann_file: str,
                   classes_option, maker: str, where: str) -> List[Missing]:
    found = unknown_names(labels, classes)
    if found is None:
        return []
    count, listed, edits = found
    return [Missing(f'image-level labels {ann_file}: {count} unknown class name(s): {listed}',
                    f'correct them in {ann_file} ({edits}; the classes are those of '
                    f'classes={classes_option!r}), or remake the file: {maker}', [where])]


def _labels_maker(option, ann_file: str, where: str, dataset: Optional[dict]) -> str:
    """The command that writes the labels of ``LoadImageLevelLabels(classes=option)``."""
    if option != 'voc':
        classes = option if isinstance(option, str) else \
            ','.join(option or []) + (',' if len(option or []) == 1 else '')  # one class: "cat,"
        return (f'python tools/dataset_converters/image_labels.py LABEL_DIR --classes {classes} '
                f'--out {ann_file}')
    root = Path((dataset or {}).get('data_root') or 'data/VOCdevkit/VOC2012')
    candidates = (root, Path(ann_file)) if dataset else (Path(ann_file), root)  # data found: there
    devkit = next(filter(None, (_holder(c, 'VOC2012') for c in candidates)), Path('data/VOCdevkit'))
    written = devkit / 'VOC2012' / 'image_labels.json'
    return VOC_PREPARE.format(devkit=devkit) + " (from VOC's XML annotations)" + \
        ('' if Path(ann_file) == written else f', then set {where}.ann_file={written}')


def check_image_level_labels(step: dict, where: str,
                             dataset: Optional[dict] = None) -> List[Missing]:
    """The label file of a ``LoadImageLevelLabels`` step: there, JSON ``{image: [class names]}``,
    known class names and (given its ``dataset``, whose folders are there) an entry for every
    image of the split; first, a class set it names that is none (the transform would refuse it
    only once the run builds the dataset, after the model)."""
    from .datasets.class_names import DATASET_CLASSES, resolve_classes
    from .datasets.transforms import read_image_level_labels
    option = step.get('classes')
    if isinstance(option, str) and option not in DATASET_CLASSES:
        return [Missing(f'{where}.classes {option!r} is no class set',
                        f'set {where}.classes to one of {", ".join(DATASET_CLASSES)} (lower '
                        "case), or to the list of the dataset's class names, in their order",
                        [f'{where}.classes'])]
    ann_file = step.get('ann_file')
    if ann_file is None:
        return []
    maker = _labels_maker(option, ann_file, where, dataset)
    ground_truth = f'; or set {where}.ann_file=None to take them from the ground truth'
    if not Path(ann_file).is_file():
        beside = Path((dataset or {}).get('data_root') or '', Path(ann_file).name)
        if dataset and beside.is_file():  # the data moved (data_root set), the file with it
            maker = f'--cfg-options {where}.ann_file={beside} (the data root\'s); or {maker}'
        shown = ann_file or "'' (an empty ann_file)"
        return [Missing(f'image-level labels {shown} not found', maker + ground_truth, [where])]
    try:
        labels = read_image_level_labels(ann_file)
    except ValueError as err:
        return [Missing(str(err), f'correct the file there, or remake it: {maker}', [where])]
    classes = resolve_classes(option)
    missing = _unknown_names(labels, classes, ann_file, option, maker, where)
    paths = split_image_paths(dataset) if dataset is not None else None  # listed once
    images = image_names(paths)
    missing += _shared_stems(paths, ann_file, where) if paths else []
    absent = [image for image in images or [] if image not in labels]
    if absent:
        from .apis.pseudo_label import file_name_keys
        missing.append(Missing(
            f'image-level labels {ann_file}: {len(absent)} of the {len(images)} images of the '
            f'split ({_listing(dataset)}) have no entry (e.g. {_examples(absent)}); '
            'training would stop with a KeyError when it reaches one',
            file_name_keys(absent, labels) or
            f'remake the file for this split: {maker}{ground_truth}', [where]))
    return missing
