"""Pre-flight check of a training, test or prefill config, before the runner is built.

Everything the run would otherwise discover one failure at a time, deep into a long log: the data
(root, split files, image and label folders; :mod:`mmdiffseg.preflight_data`), the image-level
label file (JSON, an entry for every training image, known class names), the generator options,
a label cache the run cannot write or made with other settings or in another precision than the
run's (:mod:`mmdiffseg.preflight_cache`), the class lists (:mod:`mmdiffseg.preflight_classes`),
backbone and ``load_from`` checkpoints (a local file, or a URL / ``torchvision://`` /
``open-mmlab://`` name that is in the torch hub cache or downloadable; a test with a checkpoint
needs no backbone init weights), the Stable Diffusion weights (a local diffusers folder, or a
hub id in the Hugging Face cache or downloadable) and a CUDA device where the config asks for one
(``engine_dtype=float16`` of the online labeler only where it labels: training and prefill), and
keys the model, datasets and metrics do not take (:mod:`mmdiffseg.preflight_options`). Every
problem is listed in one message with the command or setting that fixes it.

Offline (``HF_HUB_OFFLINE=1``) nothing is probed over the network: only the caches count.
"""
from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlparse

import torch
from mmengine.config import Config

from .attention.loading import single_file_checkpoint, single_file_problem
from .attention.model_check import folder_problems
from .names import nearest
from .preflight_cache import (check_cache_precision, check_cache_revision, check_cache_settings,
                              check_cache_writable, check_label_mixing_transforms,
                              check_label_step_order, check_one_label_cache, check_prompt_fit,
                              unlabelled_finder, writer_settings)
from .preflight_checkpoints import check_run_start, checkpoint_classes
from .preflight_classes import (check_dataset_classes, check_matched_class_count,
                                check_model_classes, check_prefill_labeller,
                                check_segment_scoring)
from .preflight_data import (Missing, check_dataset, check_image_level_labels,
                             check_listed_files)
from .preflight_decoding import check_image_decoding
from .preflight_label_files import check_label_convention, check_tool_label_folder
from .preflight_options import (check_cache_keys, check_generator_entry, check_head_layout,
                                check_options, generator_refusal,
                                unknown_option_keys)
from .provenance import MOVED_HUB_IDS, model_path, names_a_local_path, withdrawn_model
from .registry import config_type

TINY_SD_BASE = 'stable-diffusion-2-1-base'
#: the workspace's sample SD configs (``sd_configs/<name>``) a model id may end in
SD_CONFIG_NAME = re.compile(r'stable-diffusion-(v1-[45]|2-1-base)')
CHECKPOINT_SCHEMES = ('http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://',
                      'openmmlab://')


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


def check_sd_model(model: str, keys: List[str], variant: Optional[str] = None) -> List[Missing]:
    """A local diffusers folder the engine can run (with the weights ``variant`` the engine
    loads, its ``engine_kwargs``), or a hub id in the Hugging Face cache or downloadable."""
    settings = ' '.join(f'{k}=/path/to/diffusers-folder' for k in keys)
    try:
        folder = model_path(model)
    except ValueError as exc:  # '~name' of no user here
        return [Missing(f'Stable Diffusion {exc}', f'--cfg-options {settings}', keys)]
    checkpoint = single_file_checkpoint(model)
    if checkpoint is not None:
        why, fix = single_file_problem(checkpoint)
        return [Missing(f'Stable Diffusion model {model!r}: {why}',
                        f'{fix} (--cfg-options {" ".join(f"{k}=FOLDER" for k in keys)})', keys)]
    if folder.is_dir():
        if (folder / 'model_index.json').is_file():
            return [Missing(f'Stable Diffusion folder {model}: {problem}',
                            'where the problem names no fix of its own: another Stable '
                            f'Diffusion 1.x / 2.x diffusers folder, --cfg-options {settings}',
                            keys) for problem in folder_problems(folder, variant)]
        return [Missing(f'Stable Diffusion folder {model} has no model_index.json (not a diffusers '
                        'folder)', f'save the pipeline there with save_pretrained, or '
                        f'--cfg-options {settings}', keys)]
    withdrawn = withdrawn_model(model)
    if withdrawn:
        return [Missing(f'Stable Diffusion weights: {withdrawn}',
                        f'--cfg-options {" ".join(f"{k}={MOVED_HUB_IDS[model]}" for k in keys)}',
                        keys)]
    from huggingface_hub import constants, try_to_load_from_cache
    local = names_a_local_path(model)
    if not local and (isinstance(try_to_load_from_cache(model, 'model_index.json'), str) or
                      reachable(f'{constants.ENDPOINT}/{model}/resolve/main/model_index.json')):
        return []
    use_folder = (f'pass a local diffusers folder: --cfg-options {settings} '
                  f'({smoke_run_hint(model, keys)})')
    if local:
        return [Missing(f'Stable Diffusion folder {model!r} not found', use_folder, keys)]
    return [Missing(
        f'Stable Diffusion weights {model!r}: no such local folder, and not in the Hugging Face '
        f'cache {constants.HF_HUB_CACHE} ({"offline" if offline() else "not downloadable from here"})',
        f'where there is network: hf download {model} (then copy the cache here); or {use_folder}',
        keys)]


def tiny_sd_command(name: str = TINY_SD_BASE) -> str:
    """The command that writes a random-weights SD ``name`` (a folder of the workspace's sample
    configs, README "A first run on the CPU"; SD 2.1-base: what the tiny-cpu configs look for)."""
    from .attention.testing import shared_data_dir
    configs = shared_data_dir() / 'sd_configs' / name
    source = min(os.path.relpath(configs), str(configs), key=len) if configs.is_dir() else \
        f'SD_CONFIG_DIR (a diffusers folder of {name} configs + tokenizer, no weights)'
    return f'python tools/build_tiny_sd.py {source} --out work_dirs/tiny-{name}'


def smoke_run_hint(model: str, settings: List[str]) -> str:
    """How to run without the real weights: a tiny random-weights copy of ``model``'s
    architecture where the workspace has its configs (SD 1.4 / 1.5 / 2.1-base), else SD 2.1-base's,
    which the tiny-cpu configs read."""
    name = model.rstrip('/').rsplit('/', 1)[-1]
    if name == TINY_SD_BASE or not SD_CONFIG_NAME.fullmatch(name):
        return (f'random weights for a smoke run of the tiny-cpu configs: {tiny_sd_command()}; '
                "the full configs need the real SD 2.1-base's head counts for their iSeg head "
                'lists')
    folder = f'work_dirs/tiny-{name}'
    return (f'random weights for a smoke run: {tiny_sd_command(name)}, then --cfg-options '
            + ' '.join(f'{key}={folder}' for key in settings))


def check_generator(generator: dict, where: str) -> List[Missing]:
    """A generator config (``MASK_GENERATORS``): known type and options, values its constructor
    accepts (built here: cheap, no model)."""
    from .registry import MASK_GENERATORS
    kind = generator.get('type')
    cls = MASK_GENERATORS.get(kind) if isinstance(kind, str) else kind
    if cls is None:
        known = sorted(MASK_GENERATORS.module_dict)
        near = nearest(str(kind), known)
        return [Missing(f'{where}.type: unknown generator {kind!r}' +
                        (f' (did you mean {near!r}?)' if near else ''),
                        f'--cfg-options {where}.type={near or known[0]} (the generators: '
                        f'{", ".join(known)})', [where])]
    try:
        MASK_GENERATORS.build(dict(generator)).config_dict()  # a custom one may lack it
    except (TypeError, ValueError, KeyError, AssertionError, NotImplementedError) as err:
        return (isinstance(err, TypeError) and unknown_option_keys(where, cls, generator)) or \
            [generator_refusal(generator, inspect.signature(cls).parameters, where, err)]
    return []


#: generator settings that run only on CUDA: their values, and the fix off CUDA
CUDA_ONLY_SETTINGS = {
    'noise_draw': (('cuda_float16',), 'cpu draws the noise on the CPU'),
    'postprocess_backend': (('graph',), 'auto replays CUDA graphs only on a GPU'),
    'pamr_backend': (('graph', 'triton'), 'auto takes the Triton kernel only on a GPU')}


def _cuda_needs(cfg: Config, mode: str, sections: Dict[str, object], dtype: Optional[str],
                device: Optional[str]) -> List[str]:
    needs = []
    for name, section in sections.items():
        for path, node in walk(section, name):
            if str(node.get('device', '')).startswith('cuda'):
                needs.append(f'{path}.device={node["device"]} (--cfg-options {path}.device=cpu)')
            # the online labeler (DiffusionLabelPreprocessor) labels in training only
            labels_in_test = mode != 'test' or config_type(node) != 'DiffusionLabelPreprocessor'
            for key, (values, fix) in CUDA_ONLY_SETTINGS.items():
                if node.get(key) in values and labels_in_test:
                    needs.append(f'{path}.{key}={node[key]} (--cfg-options {path}.{key}={fix})')
            if node.get('engine_dtype') == 'float16' and labels_in_test:
                needs.append(f'{path}.engine_dtype=float16 (--cfg-options {path}.engine_dtype='
                             'float32 runs the diffusion model on the CPU)')
    if mode == 'prefill':   # prefill_labels.py: --dtype, else the preprocessor's engine_dtype
        key = 'model.data_preprocessor.engine_dtype'
        if dtype == 'float16':
            needs.append('--dtype float16 (--dtype float32 runs the diffusion model on the CPU)')
        elif dtype is None and ((cfg.get('model') or {}).get('data_preprocessor') or {}).get(
                'engine_dtype') == 'float16':
            needs.append(f'{key}=float16 (--cfg-options {key}=float32 runs the diffusion model '
                         'on the CPU)')
        if str(device or '').startswith('cuda'):
            needs.append(f'--device {device} (--device cpu)')
    if mode == 'train' and (cfg.get('optim_wrapper') or {}).get('type') == 'AmpOptimWrapper':
        needs.append('optim_wrapper.type=AmpOptimWrapper (AMP: drop --amp, or give the config an '
                     'OptimWrapper)')
    dist = (cfg.get('env_cfg') or {}).get('dist_cfg') or {}
    # under torchrun without CUDA the ranks join with gloo (apis.cli.start_runner_launcher)
    if cfg.get('launcher', 'none') not in ('none', 'pytorch') and dist.get('backend') == 'nccl':
        needs.append('env_cfg.dist_cfg.backend=nccl (--cfg-options env_cfg.dist_cfg.backend=gloo)')
    return needs


#: the config sections each mode reads (``'prefill'``: tools/prefill_labels.py, the training data
#: and its label cache only; its device and dtype: its own options, else the preprocessor's dtype)
SECTIONS = {'train': ['model', 'train_dataloader', 'val_dataloader'],
            'test': ['model', 'test_dataloader'], 'prefill': ['train_dataloader']}


#: the evaluators each mode runs
EVALUATORS = {'train': ['val_evaluator'], 'test': ['test_evaluator'], 'prefill': []}


def check(cfg: Config, mode: str = 'train', dtype: Optional[str] = None,
          device: Optional[str] = None) -> List[Missing]:
    """Everything ``cfg`` needs for ``mode`` (``'train'``, ``'test'`` or ``'prefill'``) that is
    missing or wrong here. ``dtype``, ``device``: the ``--dtype`` / ``--device`` of a prefill."""
    names = [n for n in SECTIONS[mode] if n != 'val_dataloader' or cfg.get('val_cfg')]
    sections = {name: cfg[name].to_dict() if hasattr(cfg[name], 'to_dict') else cfg[name]
                for name in names if cfg.get(name)}
    # tools/test.py passes its checkpoint as load_from: Runner.test loads it, never init_weights
    init_weights = not (mode == 'test' and cfg.get('load_from'))
    missing: List[Missing] = []
    unlabelled = unlabelled_finder(cfg)  # training images read once, where a check needs it
    sd_models: Dict[str, List[str]] = {}
    datasets: List[Tuple[str, dict]] = []  # (config key, dataset config)
    for name, section in sections.items():
        for path, node in walk(section, name):
            if path.endswith('data_preprocessor.label_cache'):
                continue  # a retired option, named by check_options
            if 'pipeline' in node and name != 'model' and \
                    ('dataset' in node or 'datasets' in node):  # MultiImageMixDataset
                if mode == 'train' and name == 'train_dataloader':  # (its datasets: below)
                    missing += check_label_mixing_transforms(node, path, unlabelled)
            elif 'pipeline' in node and name != 'model':
                disagree = check_dataset_classes(node, path)
                missing += disagree + check_label_convention(node, path)
                missing += check_tool_label_folder(node, path)
                datasets.append((path, node))
                problems = check_dataset(node, path)
                missing += problems or check_listed_files(node, path)
                missing += check_image_decoding(node, path)
                if mode in ('train', 'prefill') and name == 'train_dataloader':
                    missing += check_prompt_fit(node, path)
                if mode == 'train' and name == 'train_dataloader':
                    missing += check_label_mixing_transforms(node, path, unlabelled)
                    missing += check_label_step_order(node, path)
                for index, step in enumerate(node['pipeline'] or []):
                    key = f'{path}.pipeline.{index}'
                    if any(key + '.classes' in m.where for m in disagree):
                        continue  # its names checked against classes it is to change
                    if config_type(step) == 'LoadImageLevelLabels':
                        missing += check_image_level_labels(
                            step, key, None if problems else node)
            missing += check_generator_entry(node, path)
            if isinstance(node.get('generator'), dict) and 'type' in node['generator']:
                if 'type' not in node:  # a label cache's settings (LoadPseudoLabel's cache)
                    missing += check_cache_keys(node, path)
                found = check_generator(node['generator'], f'{path}.generator')
                model = node.get('sd_model', node.get('model') if 'type' not in node else None)
                if not found and isinstance(model, str):
                    found = check_head_layout(node['generator'], model, f'{path}.generator')
                missing += found
                if 'cache_dir' in node and mode != 'test':
                    missing += check_cache_revision(cfg, node['cache_dir'], path)
                    missing += check_cache_writable(node['cache_dir'], path,
                                                    unlabelled if mode != 'test' else None)
                    missing += check_cache_settings(node, path)
                    missing += check_cache_precision(
                        node['cache_dir'], path, writer_settings(cfg, mode, dtype),
                        unlabelled if mode != 'test' else None)
            if init_weights and node.get('type') == 'Pretrained' and \
                    isinstance(node.get('checkpoint'), str):
                missing += check_checkpoint(node['checkpoint'], f'{path}.checkpoint')
            if init_weights and isinstance(node.get('pretrained'), str):
                missing += check_checkpoint(node['pretrained'], f'{path}.pretrained')
            for key in ('model', 'sd_model'):
                if isinstance(node.get(key), str) and (key == 'sd_model' or 'cache_dir' in node):
                    sd_models.setdefault(node[key], []).append(f'{path}.{key}')
    missing += check_options(cfg, tuple(sections))
    trained = checkpoint_classes(cfg.get('load_from')) if mode != 'prefill' else None
    if mode == 'train':   # and a fine-tune's start weights, or the run resumed
        missing += check_one_label_cache(cfg) + check_run_start(cfg, trained, datasets)
    if mode == 'test' and trained:   # what the model learnt: the test set is compared with it
        datasets.insert(0, (f"load_from ({cfg.load_from}: the classes it was trained on)",
                            dict(metainfo=dict(classes=trained))))
    elif mode == 'train':   # the test set the trained model meets, read as the model learns
        datasets += [(path, node) for path, node in walk(cfg.get('test_dataloader') or {},
                                                         'test_dataloader') if 'pipeline' in node]
    missing += check_model_classes(sections.get('model') or {}, datasets)
    if mode == 'prefill':   # it reads the preprocessor's labeller options, not the model
        missing += check_prefill_labeller(cfg, dtype)
    evaluators = [(key, cfg[key]) for key in EVALUATORS[mode] if cfg.get(key) and
                  (key != 'val_evaluator' or 'val_dataloader' in sections)]
    missing += check_segment_scoring(sections.get('model') or {}, evaluators)
    missing += check_matched_class_count(evaluators, datasets)
    engine_kwargs = ((cfg.get('model') or {}).get('data_preprocessor') or {}).get(
        'engine_kwargs') or {}
    for model, keys in sd_models.items():
        missing += check_sd_model(model, keys, engine_kwargs.get('variant'))
    if cfg.get('load_from') and mode != 'prefill':
        missing += check_checkpoint(cfg.load_from, 'load_from')
    needs = _cuda_needs(cfg, mode, sections, dtype, device)
    from .cuda_check import cuda_problem  # here: `python -m mmdiffseg.cuda_check` imports
    problem = cuda_problem() if needs else None  # the package first
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
             f'{"s" if len(missing) > 1 else ""} to fix first (nothing was started):', '']
    for number, item in enumerate(missing, 1):
        lines += [f'{number}. {item.what}', f'   needed by: {", ".join(item.where)}',
                  f'   fix: {item.fix}']
    lines += ['', 'Run the same command again once they are fixed (or skip this check with '
              '--skip-preflight).']
    return '\n'.join(lines)


def ensure_ready(cfg: Config, config: str, mode: str = 'train', dtype: Optional[str] = None,
                 device: Optional[str] = None) -> None:
    """Exit (status 2, one message on stderr) when :func:`check` finds anything."""
    missing = check(cfg, mode, dtype, device)
    if missing:
        if os.environ.get('LOCAL_RANK', '0') == '0':  # once a machine under tools/dist_*.sh
            print(report(missing, config, mode), file=sys.stderr)
        raise SystemExit(2)
