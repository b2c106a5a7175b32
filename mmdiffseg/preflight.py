"""Pre-flight check of a training or test config, before the runner is built.

Everything the run would otherwise discover one failure at a time, deep into a long log: the data
(root, split files, image and label folders), the image-level label file, backbone and ``load_from``
checkpoints (a local file, or a URL / ``torchvision://`` / ``open-mmlab://`` name that is in the torch
hub cache or downloadable), the Stable Diffusion weights (a local diffusers folder, or a hub id in the
Hugging Face cache or downloadable) and a CUDA device where the config asks for one. Every missing
piece is listed in one message with the command or setting that fixes it.

Offline (``HF_HUB_OFFLINE=1``) nothing is probed over the network: only the caches count.
"""
from __future__ import annotations

import functools
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Dict, Iterator, List, Tuple
from urllib.parse import urlparse

import torch
from mmengine.config import Config

from .cuda_check import cuda_problem
from .provenance import MOVED_HUB_IDS, withdrawn_model

DATA_GUIDE = 'README "Data layout"'
VOC_PREPARE = 'python tools/dataset_converters/voc_aug.py {devkit} --sbd data/benchmark_RELEASE'
ELSEWHERE = '; or set data_root (and data_prefix) of the entries above to where yours is'
VOC_FIX = VOC_PREPARE + ' (VOC 2012 trainval + SBD, ' + DATA_GUIDE + ')' + ELSEWHERE
DATA_FIXES = {
    'PascalVOCDataset': VOC_FIX,
    'Synthetic': 'python tools/synthesize.py ... --out {root} (README "Offline generation")' +
                 ELSEWHERE,
    'PseudoLabel': 'python tools/pseudo_label.py ... --out DIR (README "Offline generation")' +
                   ELSEWHERE,
}
OTHER_DATA_FIX = 'prepare it as ' + DATA_GUIDE + ' says' + ELSEWHERE
CHECKPOINT_SCHEMES = ('http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://',
                      'openmmlab://')


@dataclass
class Missing:
    """One missing piece: what it is, which config entries need it, how to fix it."""
    what: str
    fix: str
    where: List[str] = field(default_factory=list)


def offline() -> bool:
    return os.environ.get('HF_HUB_OFFLINE', '').lower() in ('1', 'true', 'yes', 'on')


@functools.lru_cache(maxsize=None)
def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url`` answers (a HEAD request); never tried offline."""
    if offline():
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout)
    except urllib.error.HTTPError as err:
        return err.code < 400
    except (OSError, ValueError):
        return False
    return True


def walk(node, path: str = '') -> Iterator[Tuple[str, dict]]:
    """Every dict in a config tree with its dotted key path (list items by index, as
    ``--cfg-options`` writes them)."""
    if isinstance(node, dict):
        yield path, node
        children = node.items()
    elif isinstance(node, (list, tuple)):
        children = enumerate(node)
    else:
        return
    for key, value in children:
        yield from walk(value, f'{path}.{key}' if path else str(key))


def _join(root: str, path: str) -> Path:
    return Path(path) if not root or os.path.isabs(path) else Path(root, path)


def _data_fix(dataset: dict) -> str:
    kind = str(dataset.get('type', ''))
    template = next((fix for name, fix in DATA_FIXES.items() if kind.startswith(name)),
                    OTHER_DATA_FIX)
    root = dataset.get('data_root') or ''
    return template.format(devkit=Path(root).parent if root else 'data/VOCdevkit', root=root)


def check_dataset(dataset: dict, where: str) -> List[Missing]:
    """Data root, split file and the image / label folders the pipeline reads."""
    root = dataset.get('data_root') or ''
    kind = dataset.get('type', 'dataset')
    if root and not Path(root).is_dir():
        return [Missing(f'{kind} data root {root} does not exist', _data_fix(dataset),
                        [where])]
    missing = []
    if dataset.get('ann_file') and not _join(root, dataset['ann_file']).is_file():
        missing.append(Missing(f'{kind} split file {_join(root, dataset["ann_file"])} not found',
                               _data_fix(dataset), [where]))
    reads_labels = any(
        step.get('type') == 'LoadAnnotations' or
        (step.get('type') == 'LoadImageLevelLabels' and step.get('ann_file') is None)
        for step in dataset.get('pipeline', []) if isinstance(step, dict))
    prefixes = dict(dataset.get('data_prefix') or {})
    for key, needed in (('img_path', True), ('seg_map_path', reads_labels)):
        if needed and prefixes.get(key) is not None and not _join(root, prefixes[key]).is_dir():
            missing.append(Missing(f'{kind} folder {_join(root, prefixes[key])} not found',
                                   _data_fix(dataset), [where]))
    return missing


def check_image_level_labels(step: dict, where: str) -> List[Missing]:
    ann_file = step.get('ann_file')
    if ann_file is None or Path(ann_file).is_file():
        return []
    classes = step.get('classes')
    maker = VOC_PREPARE.format(devkit=Path(ann_file).parent.parent) + \
        " (from VOC's XML annotations)" if classes == 'voc' else \
        f'python tools/dataset_converters/image_labels.py LABEL_DIR --classes {classes} --out {ann_file}'
    return [Missing(f'image-level labels {ann_file} not found',
                    f'{maker}; or set {where}.ann_file=None to take them from the ground truth',
                    [where])]


def checkpoint_url(name: str) -> str:
    """The URL mmengine downloads ``name`` (``torchvision://``, ``open-mmlab://`` or a URL) from."""
    from mmengine.runner import checkpoint as ckpt
    if name.startswith(('torchvision://', 'modelzoo://')):
        return ckpt.get_torchvision_models()[name.split('://', 1)[1]]
    if name.startswith(('open-mmlab://', 'openmmlab://')):
        model = name.split('://', 1)[1]
        model = ckpt.get_deprecated_model_names().get(model, model)
        return ckpt.get_external_models()[model]
    return name


def check_checkpoint(name: str, where: str) -> List[Missing]:
    """A checkpoint file, or a remote one that is cached (torch hub) or downloadable."""
    if not name.startswith(CHECKPOINT_SCHEMES):
        if Path(name).expanduser().is_file():
            return []
        return [Missing(f'checkpoint {name} not found',
                        f'train the run that writes it first, or set {where}=/path/to/file.pth',
                        [where])]
    if name.startswith(('torchvision://', 'modelzoo://')):
        problem = None if find_spec('torchvision') else 'is not installed'
        if problem is None:
            try:
                import torchvision  # noqa: F401
            except Exception as err:  # noqa: BLE001  (a torchvision built for another torch)
                problem = f'does not import ({type(err).__name__}: {err})'
        if problem:
            return [Missing(f'torchvision, needed to load {name}, {problem}',
                            'bash tools/install.sh (torch with its torchvision), or pip install the '
                            f'torchvision built for torch {torch.__version__}', [where])]
    url = checkpoint_url(name)
    cache = Path(torch.hub.get_dir(), 'checkpoints')
    if (cache / os.path.basename(urlparse(url).path)).is_file() or reachable(url):
        return []
    return [Missing(f'pretrained weights {name} ({url}): not in the torch hub cache {cache} '
                    f'and {"offline" if offline() else "not downloadable from here"}',
                    f'download it where there is network (wget -P {cache} {url}) and copy it '
                    f'into {cache}, or set {where}=/path/to/file.pth', [where])]


def check_sd_model(model: str, keys: List[str]) -> List[Missing]:
    """A local diffusers folder, or a hub id in the Hugging Face cache or downloadable."""
    folder = Path(model).expanduser()
    settings = ' '.join(f'{k}=/path/to/diffusers-folder' for k in keys)
    if folder.is_dir():
        if (folder / 'model_index.json').is_file():
            return []
        return [Missing(f'Stable Diffusion folder {model} has no model_index.json (not a diffusers '
                        'folder)', f'save the pipeline there with save_pretrained, or '
                        f'--cfg-options {settings}', keys)]
    withdrawn = withdrawn_model(model)
    if withdrawn:
        return [Missing(f'Stable Diffusion weights: {withdrawn}',
                        f'--cfg-options {" ".join(f"{k}={MOVED_HUB_IDS[model]}" for k in keys)}',
                        keys)]
    from huggingface_hub import constants, try_to_load_from_cache
    if model.count('/') == 1 and not model.startswith(('.', '/', '~')):
        if isinstance(try_to_load_from_cache(model, 'model_index.json'), str) or \
                reachable(f'{constants.ENDPOINT}/{model}/resolve/main/model_index.json'):
            return []
    return [Missing(
        f'Stable Diffusion weights {model!r}: no such local folder, and not in the Hugging Face '
        f'cache {constants.HF_HUB_CACHE} ({"offline" if offline() else "not downloadable from here"})',
        f'where there is network: hf download {model} (then copy the cache here); or '
        f'pass a local diffusers folder: --cfg-options {settings} (random weights for a smoke run: '
        'python tools/build_tiny_sd.py --out FOLDER)', keys)]


def _cuda_needs(cfg: Config, mode: str, sections: Dict[str, object]) -> List[str]:
    needs = []
    for name, section in sections.items():
        for path, node in walk(section, name):
            if str(node.get('device', '')).startswith('cuda'):
                needs.append(f'{path}.device={node["device"]} (--cfg-options {path}.device=cpu)')
            if node.get('engine_dtype') == 'float16':
                needs.append(f'{path}.engine_dtype=float16 (--cfg-options {path}.engine_dtype='
                             'float32 runs the diffusion model on the CPU)')
    if mode == 'train' and cfg.get('optim_wrapper', {}).get('type') == 'AmpOptimWrapper':
        needs.append('optim_wrapper.type=AmpOptimWrapper (AMP: drop --amp, or give the config an '
                     'OptimWrapper)')
    dist = cfg.get('env_cfg', {}).get('dist_cfg', {})
    # under torchrun without CUDA the ranks join with gloo (apis.cli.start_runner_launcher)
    if cfg.get('launcher', 'none') not in ('none', 'pytorch') and dist.get('backend') == 'nccl':
        needs.append('env_cfg.dist_cfg.backend=nccl (--cfg-options env_cfg.dist_cfg.backend=gloo)')
    return needs


#: the config sections each mode reads (``'prefill'``: tools/prefill_labels.py, the training data
#: and its label cache's model only; its device and dtype come from its own options)
SECTIONS = {'train': ['model', 'train_dataloader', 'val_dataloader'],
            'test': ['model', 'test_dataloader'], 'prefill': ['train_dataloader']}


def check(cfg: Config, mode: str = 'train') -> List[Missing]:
    """Everything ``cfg`` needs for ``mode`` (``'train'``, ``'test'`` or ``'prefill'``) that is
    missing here."""
    names = [n for n in SECTIONS[mode] if n != 'val_dataloader' or cfg.get('val_cfg')]
    sections = {name: cfg[name].to_dict() if hasattr(cfg[name], 'to_dict') else cfg[name]
                for name in names if cfg.get(name)}
    missing: List[Missing] = []
    sd_models: Dict[str, List[str]] = {}
    for name, section in sections.items():
        for path, node in walk(section, name):
            if 'pipeline' in node and name != 'model':
                missing += check_dataset(node, path)
            if node.get('type') == 'LoadImageLevelLabels':
                missing += check_image_level_labels(node, path)
            if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
                missing += check_checkpoint(node['checkpoint'], f'{path}.checkpoint')
            if isinstance(node.get('pretrained'), str):
                missing += check_checkpoint(node['pretrained'], f'{path}.pretrained')
            for key in ('model', 'sd_model'):
                if isinstance(node.get(key), str) and (key == 'sd_model' or 'cache_dir' in node):
                    sd_models.setdefault(node[key], []).append(f'{path}.{key}')
    for model, keys in sd_models.items():
        missing += check_sd_model(model, keys)
    if cfg.get('load_from') and mode != 'prefill':
        missing += check_checkpoint(cfg.load_from, 'load_from')
    needs = _cuda_needs(cfg, mode, sections)
    problem = cuda_problem() if needs else None
    if problem is not None:
        missing.append(Missing(f'a CUDA device (torch sees none: {problem.reason})',
                               f'{problem.fix}; or, to run without one, change what needs it: '
                               + '; '.join(needs), ['config']))
    return merge(missing)


def merge(missing: List[Missing]) -> List[Missing]:
    """One entry per missing piece; the config entries that need it are listed together."""
    merged: Dict[str, Missing] = {}
    for item in missing:
        if item.what in merged:
            merged[item.what].where += [w for w in item.where if w not in merged[item.what].where]
        else:
            merged[item.what] = Missing(item.what, item.fix, list(item.where))
    return list(merged.values())


def report(missing: List[Missing], config: str, mode: str) -> str:
    lines = [f'Pre-flight check: {config} cannot {mode} here yet; {len(missing)} thing'
             f'{"s are" if len(missing) > 1 else " is"} missing (nothing was started):', '']
    for number, item in enumerate(missing, 1):
        lines += [f'{number}. {item.what}', f'   needed by: {", ".join(item.where)}',
                  f'   fix: {item.fix}']
    lines += ['', 'Run the same command again once they are there (or skip this check with '
              '--skip-preflight).']
    return '\n'.join(lines)


def ensure_ready(cfg: Config, config: str, mode: str = 'train') -> None:
    """Exit (status 2, one message on stderr) when anything :func:`check` finds is missing."""
    missing = check(cfg, mode)
    if missing:
        print(report(missing, config, mode), file=sys.stderr)
        raise SystemExit(2)
