"""The settings of a label cache (``LoadPseudoLabel(cache=...)``) as plain, comparable values, and
the settings a cache cannot honour."""
import json
from pathlib import Path
from typing import Dict, Optional, Tuple, Union


def cache_folder(cache_dir: Union[str, Path]) -> Path:
    """The folder ``cache_dir`` names, ``~`` expanded (else ``'~/labels'`` is a folder named
    ``~`` in the working directory)."""
    return Path(cache_dir).expanduser()


def canonical_json(value) -> object:
    """JSON round trip, so tuples / numpy scalars compare equal to what was stored."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


#: the keys of a label cache's settings (``LoadPseudoLabel(cache=...)``), the first three required
CACHE_KEYS = ('cache_dir', 'model', 'generator', 'wait_timeout')


def canonical_cache_spec(cache: dict) -> dict:
    """The :class:`LabelCache` arguments as plain JSON values (comparable, cheap to pickle).

    Raises:
        KeyError: ``cache_dir``, ``model`` or ``generator`` is missing, or a key is unknown.
    """
    spec = canonical_json(dict(cache))
    missing = [k for k in CACHE_KEYS[:3] if k not in spec]
    unknown = sorted(set(spec) - set(CACHE_KEYS))
    if missing or unknown:
        raise KeyError(f'label cache settings {spec}: missing {missing}, unknown {unknown}; '
                       'expected dict(cache_dir=..., model=<hub id or diffusers folder>, '
                       'generator=dict(type=...)[, wait_timeout=seconds])')
    return spec


def revision_refusal(engine_kwargs: Optional[Dict], cache_dir: str) -> Optional[Tuple[str, str]]:
    """``(what, fix)`` where ``engine_kwargs`` name a hub ``revision``, which a label cache
    cannot tell apart (None otherwise): the cache knows its model by name and files, and every
    reader of it (the train pipeline's ``LoadPseudoLabel``) by the name alone, so labels of one
    revision would be served to another."""
    revision = (engine_kwargs or {}).get('revision')
    if revision in (None, 'main'):
        return None
    return (f'model.data_preprocessor.engine_kwargs.revision={revision!r} with the label cache '
            f'{cache_dir}, which knows its model by name and files, not by revision (labels of '
            'one revision would be served to another)',
            f'download that revision to a folder (hf download MODEL --revision {revision} '
            "--local-dir FOLDER) and set the cache's model to FOLDER, without "
            'engine_kwargs.revision')


def empty_cache_note(cache_dir: Union[str, Path]) -> str:
    """A refusal's note where a signed folder holds no label yet (a run stopped before its
    first label signed it): deleting it loses nothing."""
    if any(Path(cache_dir).glob('??/*.png')):
        return ''
    return (f' It holds no label yet (signed by a run stopped before its first): deleting it '
            f'(rm -r {cache_dir}) loses nothing, once no run is starting into it.')


def _weights(variant: Optional[str]) -> str:
    return f'the {variant!r} weights variant' if variant else 'the plain weights'


def writer_difference(made_with: Dict, dtype: str,
                      variant: Optional[str]) -> Optional[Tuple[str, str]]:
    """``(what the cache holds, the settings that make more of it)`` where a process making
    labels in ``dtype`` from the ``variant`` weights (``engine_kwargs.variant``, e.g. ``'fp16'``)
    differs from what a label cache's first writer recorded in ``made_with`` (float16 and
    float32 labels, or those of cast weights, differ on a few percent of pixels); None where
    they agree, where the cache recorded nothing (a variant: made before variants were
    recorded), or where both load the same float16 tensors (the ``'fp16'`` files are the plain
    weights cast, as on the hub)."""
    written = made_with.get('dtype')
    if written not in (None, dtype):
        return (f'labels made in {written}, and this run would add labels made in {dtype}',
                f'set the engine precision to {written} (--cfg-options model.data_preprocessor.'
                f'engine_dtype={written}, or --dtype {written} for prefill_labels.py)')
    if not written or 'variant' not in made_with or made_with['variant'] == variant or \
            written == 'float16' and {made_with['variant'], variant} <= {None, 'fp16'}:
        return None
    recorded = made_with['variant']
    load = (f"model.data_preprocessor.engine_kwargs.variant='{recorded}'" if recorded else
            'model.data_preprocessor.engine_kwargs without variant')
    return (f'labels made from {_weights(recorded)} of its model, and this run would add labels '
            f'made from {_weights(variant)}', f'load the weights they were made from ({load})')
