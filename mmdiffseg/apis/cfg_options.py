"""``--cfg-options`` of the training tools merged into a config only where the run reads it:
mmengine adds a key the config lacks as a new entry nothing reads, and a config's own
variables (``crop_size = (512, 512)``) were read when it loaded, so either slip ran the config
unchanged."""
from __future__ import annotations

import difflib
import inspect
import re
from typing import Callable, List, Mapping, Optional

from mmengine.config import DictAction

from .io import UserInputError

#: a space between two characters of one value, which mmengine's DictAction removes
_JOINED = re.compile(r'[^\s,\[\]()]\s+[^\s,\[\]()]')


class CfgOptionsAction(DictAction):
    """mmengine's ``--cfg-options`` parsing, refusing a value with a space inside: mmengine
    removes every space (``cache_dir=/data/my labels`` became ``/data/mylabels``, a new folder
    the run wrote to in silence; a class name ``potted plant``, ``pottedplant``). Spaces around
    a list's commas and brackets are mmengine's separators and pass."""

    def __call__(self, parser, namespace, values, option_string=None):
        for pair in values or []:
            key, _, value = pair.partition('=')
            if _JOINED.search(value.strip('\'"')):
                parts = key.split('.')
                listed = next((i for i, part in enumerate(parts) if part.isdigit()), None)
                where = (f'redefine {".".join(parts[:listed])} whole (a derived config cannot '
                         'set one item of a list)' if listed else f'set {key}')
                parser.error(
                    f'--cfg-options {pair}: mmengine removes the spaces inside a value (it would '
                    f'read {value.strip(chr(39) + chr(34)).replace(" ", "")!r}); {where} in a '
                    "config file that inherits this one (_base_ = ['<this config>']), or give a "
                    'path without spaces (e.g. through a symlink)')
        super().__call__(parser, namespace, values, option_string)


#: top-level entries the runner reads that a config may leave out (besides ``Runner``'s arguments)
RUNNER_READS = ('runner_type', 'compile', 'find_unused_parameters', 'model_wrapper_cfg',
                'activation_checkpointing', 'efficient_conv_bn_eval', 'tta_model', 'tta_pipeline')


def merge_cfg_options(cfg, options: Optional[Mapping]) -> None:
    """``options`` merged into ``cfg``. A key whose first part the config lacks is refused,
    naming the entries meant (those ending in its first part, the runner's first; else the
    nearest top-level one); a new entry near none (one a custom hook reads) is merged. A change
    to a config variable is refused likewise, naming the entries that took it
    (:func:`_entries_that_took`), else those of its name; one that fed no entry of the runner is
    merged. A top-level ``data_preprocessor`` is read only where ``model`` has none (mmengine's
    ``Runner.build_model``)."""
    if not options:
        return
    from mmengine.runner import Runner
    read = set(inspect.signature(Runner.__init__).parameters) | set(RUNNER_READS)
    if 'data_preprocessor' in (cfg.get('model') or {}):
        read.discard('data_preprocessor')
    tree = cfg.to_dict()
    for key in options:
        top = key.split('.')[0]
        name = top.split('[')[0]
        if top in read:
            continue
        index = top[len(name):].replace('[', '.').replace(']', '')  # '[2]' -> '.2'
        named = [p for p in _paths(tree, lambda part, _: part == name)
                 if p.split('.')[0] in read]
        if name in cfg:
            took = _entries_that_took(tree, name, read)
            if took:
                tried = [f'{path}{index}{key[len(top):]}' for path in took]
                raise UserInputError(
                    f'--cfg-options {key}: {name!r} is a variable of the config, read when it '
                    'loaded (changing it now changes nothing); set '
                    + ('each entry that took it: ' if len(tried) > 1 else 'the entry that took '
                       'it: ') + ', '.join(tried))
            if top == name and not named:
                continue
        paths = named or _paths(tree, lambda part, _: part == name)
        meant = paths or difflib.get_close_matches(name, list(cfg), n=1, cutoff=0.8)
        if '[' not in top and not meant:
            continue
        tried = [f'{path}{index}{key[len(top):]}' for path in meant]
        raise UserInputError(
            f'--cfg-options {key}: '
            + (f'{name!r} is a variable of the config, read when it loaded, that no entry of the '
               'run took' if top == name and name in cfg else f'the config has no entry {top!r} '
               '(mmengine would add it, and nothing reads it)')
            + (f'; did you mean {" or ".join(tried)}?' if tried else '')
            + (' (a list item is LIST.INDEX, not LIST[INDEX])' if '[' in top else ''))
    cfg.merge_from_dict(options)


def _entries_that_took(cfg: dict, name: str, read) -> List[str]:
    """The entries the runner reads (top-level names in ``read``) that the config variable
    ``name`` went into when the config loaded: those of its name holding its value, then any
    holding it when it is a string or container (``train_pipeline`` ->
    ``train_dataloader.dataset.pipeline``). A same-named entry holding another value took
    another variable (Cityscapes' ``crop_size`` (512, 1024) beside a (512, 512) crop step)."""
    value = cfg[name]
    took = _paths(cfg, lambda part, child: part == name and _same(child, value))
    if value and isinstance(value, (str, Mapping, list, tuple)):
        took += [p for p in _paths(cfg, lambda _, child: _same(child, value)) if p not in took]
    return [p for p in took if p.split('.')[0] in read]


def _same(a, b) -> bool:
    """Equal values of one type, a tuple and a list alike (a config's ``(512, 512)``)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _paths(node, keep: Callable[[object, object], bool], path: str = '',
           depth: int = 12) -> List[str]:
    """The dotted paths below the top of ``node`` (list items by index, as ``--cfg-options``
    addresses them) whose last part and value ``keep`` accepts."""
    items = node.items() if isinstance(node, Mapping) else \
        enumerate(node) if isinstance(node, (list, tuple)) else ()
    found = []
    for part, child in items if depth else ():
        child_path = f'{path}.{part}' if path else str(part)
        if path and keep(part, child):
            found.append(child_path)
        found += _paths(child, keep, child_path, depth - 1)
    return found
