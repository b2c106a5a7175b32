"""Warm start of online labels: label every training image of a config into its label cache.

Reuses what the training run itself uses, so that the run then finds every label cached (same
keys) and generates none: the config's train dataset (mmseg ``DATASETS``, its pipeline cut to
``LoadImageLevelLabels``), the label cache of its ``LoadPseudoLabel``, the engine settings of its
``DiffusionLabelPreprocessor`` and :meth:`OnlineLabeler.labels` (the same reading, batching and
generator). Dataloader workers read, hash and decode the images; each rank of a
``--launcher pytorch`` run takes every ``world_size``-th image, and the cache's claims keep each
label made once where two ranks (or a training run) meet the same image. Resumable: images whose
label is cached are skipped.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections import Counter
from functools import partial
from typing import Callable, Collection, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine import fileio
from mmengine.config import Config
from mmengine.dist import all_reduce, get_dist_info
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from ..apis.io import (JobStopped, RankStopped, SettingsRefused, UserInputError, collective,
                       stop_reason)
from ..apis.progress import ProgressLine, start_worker
from ..apis.image_inputs import inner_dataset_cfgs
from ..datasets.cache_settings import canonical_cache_spec
from ..datasets.label_files import label_key, label_path, read_label
from ..generators.base import IGNORE_INDEX
from ..registry import config_type
from ..attention.images import decode_rgb
from .online_labeler import OnlineLabeler

#: pipeline steps kept for the prefill (what the labels depend on besides the image file)
PREFILL_STEPS = ('LoadImageLevelLabels', )


def online_dataset_cfgs(dataset_cfg: dict) -> List[dict]:
    """The dataset configs (wrappers opened: :func:`~mmdiffseg.apis.pseudo_label.
    inner_dataset_cfgs`) whose pipeline has a ``LoadPseudoLabel`` step."""
    return [inner for _, inner in inner_dataset_cfgs(dataset_cfg, 'dataset')
            if any(config_type(s) == 'LoadPseudoLabel' for s in inner.get('pipeline') or [])]


def config_label_caches(cfg: Config) -> List[dict]:
    """The label-cache settings (``LoadPseudoLabel(cache=...)``: ``cache_dir``, ``model``,
    ``generator``) that a config's training run uses, in dataset order. These, not other copies
    of the dict elsewhere in the config (inherited base variables), name the SD model in use."""
    if not cfg.get('train_dataloader'):
        return []
    return [canonical_cache_spec(step['cache'])
            for dataset in online_dataset_cfgs(cfg.train_dataloader.dataset)
            for step in dataset['pipeline'] if config_type(step) == 'LoadPseudoLabel']


def one_label_cache(cfg: Config, who: str) -> Optional[dict]:
    """The one label cache of ``cfg``'s train datasets (None: no online labels).

    Raises:
        UserInputError: they name several (one preprocessor serves one).
    """
    specs = config_label_caches(cfg)
    if any(spec != specs[0] for spec in specs):
        raise UserInputError(f'{who}: the train datasets use several label caches '
                             f'{[spec["cache_dir"] for spec in specs]} (or one with other '
                             'settings); the preprocessor serves one')
    return specs[0] if specs else None


def prefill_cache(cfg: Config, config: str = 'the config') -> dict:
    """The label cache a prefill of ``cfg`` (file ``config``) fills.

    Raises:
        UserInputError: ``cfg`` labels nothing online, or in several caches.
    """
    spec = one_label_cache(cfg, 'prefill')
    if spec is None:
        raise UserInputError(f'{config} labels nothing online (its train pipeline has no '
                             'LoadPseudoLabel step): nothing to prefill; train it with '
                             'tools/train.py')
    return spec


@dataclasses.dataclass
class PrefillSummary:
    """Counts over all ranks; those of rank ``rank``'s share alone where that rank did not
    wait for the others (interrupted while they label on) or they stopped."""
    images: int = 0
    made: int = 0
    cached: int = 0
    seconds: float = 0.0
    cache_dir: str = ''
    cache_size: int = 0
    interrupted: bool = False
    #: of the labels made (here or by another process): those all unsure (255 everywhere)
    unsure: int = 0
    rank: Optional[int] = None
    #: the images to go through (fewer were when interrupted or stopped); None: ``images``
    total: Optional[int] = None
    #: images listed again (the same file twice in the datasets, e.g. overlapping splits of a
    #: ConcatDataset): labelled once, at their first listing
    repeated: int = 0
    #: images that failed (attention maps that overflowed, a prompt too long), so not labelled
    failed: int = 0

    def line(self) -> str:
        elsewhere = self.images - self.made - self.cached - self.repeated - self.failed
        rate = self.made / self.seconds if self.seconds > 0 else 0.0
        share = '' if self.rank is None else f" (rank {self.rank}'s share)"
        of = '' if self.total in (None, self.images) else f' of {self.total}'
        again = f', listed again {self.repeated}' if self.repeated else ''
        failed = f', failed {self.failed}' if self.failed else ''
        return (f'prefill{share}: {self.images}{of} images: made {self.made}, already cached '
                f'{self.cached}{again}{failed}, made by another process {elsewhere}; '
                f'{self.seconds:.1f} s ({rate:.2f} labels/s); {self.cache_dir} holds '
                f'{self.cache_size} labels')

    def __str__(self) -> str:
        text = self.line()
        if self.unsure:
            text += (f'\n{self.unsure} of the labels made (here or by another process) are all '
                     'unsure (255): the generator found nothing in those images, and training '
                     'learns nothing from them')
        if self.failed:
            text += (f'\n{self.failed} images failed (the warnings name each and why), so they '
                     'have no label: training trains them as all unsure; maps that overflowed '
                     '(NaN or inf in float16) are made in float32 (--dtype float32), an image '
                     'whose classes do not fit its prompt\'s 77 tokens with fewer classes listed')
        if self.interrupted:
            text += '\ninterrupted: rerun the same command to resume (cached images are skipped)'
        return text


class _RankImages(torch.utils.data.Dataset):
    """This rank's share of the datasets' images as ``(key, RGB image or None when its label is
    cached, class names, path)`` (run in dataloader workers)."""

    def __init__(self, datasets: List, cache_dir: str, rank: int, world_size: int):
        self.datasets, self.cache_dir = datasets, cache_dir
        index = [(d, i) for d, dataset in enumerate(datasets) for i in range(len(dataset))]
        self.index = index[rank::world_size]

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, item: int) -> Tuple[dict, bytes, str, bool]:
        """The dataset's results for the image, its file's bytes, its label key and whether
        its label is cached."""
        d, i = self.index[item]
        results = self.datasets[d][i]
        data = fileio.get(results['img_path'])
        key = label_key(data, list(results['image_labels']))
        return results, data, key, read_label(label_path(self.cache_dir, key)) is not None

    def __getitem__(self, item: int) -> Tuple[str, Union[np.ndarray, str, None], List[str], str]:
        """``(key, image, class names, path)``; the image is None when its label is cached, the
        error naming the file where OpenCV cannot decode it (raised by the main process: a
        worker's exception would come with its traceback)."""
        results, data, key, cached = self.lookup(item)
        try:
            image = None if cached else decode_rgb(data, results['img_path'])
        except ValueError as err:
            image = str(err)
        return key, image, list(results['image_labels']), results['img_path']


def training_label_keys(cfg: Config, cache_dir: str) -> Iterator[Tuple[str, str, bool]]:
    """``(image path, label key, whether its label is cached)`` of each training image of the
    datasets whose ``LoadPseudoLabel`` caches in ``cache_dir``, read and keyed as training keys
    it."""
    def caches_here(dataset_cfg: dict) -> bool:
        return any(config_type(step) == 'LoadPseudoLabel'
                   and (step.get('cache') or {}).get('cache_dir') == cache_dir
                   for step in dataset_cfg['pipeline'])
    dataset_cfgs = [d for d in online_dataset_cfgs(cfg.train_dataloader.dataset) if caches_here(d)]
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        images = _RankImages(_build_datasets(dataset_cfgs), cache_dir, 0, 1)
    for item in range(len(images)):
        results, _, key, cached = images.lookup(item)
        yield results['img_path'], key, cached


def first_unlabelled_image(cfg: Config, cache_dir: str) -> Optional[str]:
    """The first training image whose label ``cache_dir`` lacks, or None when every one has its
    label (:func:`training_label_keys`)."""
    return next((path for path, _, cached in training_label_keys(cfg, cache_dir) if not cached),
                None)


def _build_datasets(dataset_cfgs: List[dict]) -> List:
    from mmseg.registry import DATASETS
    datasets = []
    for dataset_cfg in dataset_cfgs:
        cut = Config(dict(dataset_cfg)).to_dict()
        cut['pipeline'] = [s for s in cut['pipeline'] if config_type(s) in PREFILL_STEPS]
        datasets.append(DATASETS.build(cut))
    return datasets


def _labeler(cfg: Config, spec: dict, dtype: Optional[str],
             batch_size: Optional[int]) -> OnlineLabeler:
    pre = cfg.model.get('data_preprocessor') or {}
    if config_type(pre) != 'DiffusionLabelPreprocessor':
        raise ValueError('prefill: model.data_preprocessor is not a DiffusionLabelPreprocessor: '
                         'the config does not train on online labels')
    labeler = OnlineLabeler(dtype=dtype or pre.get('engine_dtype', 'float32'),
                            batch_size=batch_size or pre.get('label_batch_size', 4),
                            engine_kwargs=pre.get('engine_kwargs'),
                            overflow_fix='--dtype float32')
    labeler.bind(spec, check_writer=False)   # a full cache is read in any precision
    return labeler


class _Listings:
    """Each listing of an image counted once: made, cached, listed again (an image labelled or
    found earlier in this run, or twice in a batch), failed (no label: its maps overflowed, or its
    prompt cannot hold its classes) or, the rest, made by another process. An image that failed
    and is made at a later listing counts the earlier one as listed again."""

    def __init__(self):
        self.seen: set = set()
        self.unlabelled: set = set()

    def count(self, keys: List[str], cached: bool,
              failed: Collection[str] = ()) -> Tuple[int, int, int]:
        """``(cached, listed again, failed)`` of a batch's listings ``keys``."""
        found = again = lost = 0
        for key, listed in Counter(keys).items():
            again += listed - 1
            if key in self.seen:
                again += 1
            elif key in failed:
                again += key in self.unlabelled
                lost += key not in self.unlabelled
                self.unlabelled.add(key)
            else:
                self.seen.add(key)
                if key in self.unlabelled:  # made now: its failed listing becomes a repeat
                    self.unlabelled.discard(key)
                    lost, again = lost - 1, again + 1
                found += cached
        return found, again, lost


def _full_batches(loader: torch.utils.data.DataLoader, batch_size: int,
                  settle: Callable[[list, bool], None]) -> Iterator[list]:
    """The loader's uncached images regrouped into batches of ``batch_size`` (the last one
    shorter), so that a resumed prefill runs the engine at full batches; cached images are
    settled as they arrive (``settle(entries, True)``)."""
    pending: list = []
    for batch in loader:
        refused = [entry[1] for entry in batch if isinstance(entry[1], str)]
        if refused:
            raise UserInputError(refused[0])
        settle([entry for entry in batch if entry[1] is None], True)
        pending += [entry for entry in batch if entry[1] is not None]
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            del pending[:batch_size]
    if pending:
        yield pending


def prefill(cfg: Config, device: str, batch_size: Optional[int] = None,
            dtype: Optional[str] = None, workers: Optional[int] = None,
            progress: bool = True) -> PrefillSummary:
    """Label every image of ``cfg``'s train dataset into its label cache (this rank's share).

    Args:
        cfg: a training config with online labels (``LoadPseudoLabel`` +
            ``DiffusionLabelPreprocessor``).
        device: where the engine runs (``cuda:N`` per rank under a launcher).
        batch_size, dtype: engine batch and precision (default: the preprocessor's
            ``label_batch_size`` and ``engine_dtype``).
        workers: dataloader workers reading images (default: the train dataloader's).
        progress: show a progress bar on rank 0.

    Returns:
        The summary over all ranks (also after Ctrl-C: what was made is kept).
    """
    spec = prefill_cache(cfg)
    labeler = _labeler(cfg, spec, dtype, batch_size)
    rank, world_size = get_dist_info()
    dataset_cfgs = online_dataset_cfgs(cfg.train_dataloader.dataset)
    images = _RankImages(_build_datasets(dataset_cfgs), str(labeler.cache.cache_dir), rank,
                         world_size)
    if workers is None:
        workers = cfg.train_dataloader.get('num_workers', 0)
    # the workers die with this process, however it ends (kill -9 left them waiting forever)
    loader = torch.utils.data.DataLoader(images, batch_size=labeler.options['batch_size'],
                                         num_workers=workers, collate_fn=list,
                                         worker_init_fn=partial(start_worker, os.getpid()))
    # images, made, cached, all unsure, listed again, failed; then the images to go through
    counts = torch.tensor([0, 0, 0, 0, 0, 0, len(images)], dtype=torch.float64)
    start, interrupted, stopped, listings = time.perf_counter(), False, None, _Listings()
    with ProgressLine(len(images) if progress and rank == 0 else 0, sys.stdout,
                      ranks=world_size) as bar:
        bar.start()

        def settle(entries: list, cached: bool, made: int = 0, unsure: int = 0,
                   failed: Collection[str] = ()) -> None:
            found, again, lost = listings.count([entry[0] for entry in entries], cached, failed)
            counts[:6].add_(torch.tensor([len(entries), made, found, unsure, again, lost],
                                         dtype=torch.float64))
            for _ in entries:   # a cached label leaves the bar: its ETA is of labels to make
                bar.skip() if cached else bar.update()

        try:
            for entries in _full_batches(loader, labeler.options['batch_size'], settle):
                todo = {key: (lambda image=image: image, names) for key, image, names, _ in entries}
                made_before = labeler.generated
                labels = labeler.labels(todo, device)
                failed = {key: path for key, _, _, path in entries
                          if not isinstance(labels[key], np.ndarray)}
                for key, path in failed.items():
                    print_log(f'{path}: {labels[key]}: not labelled', logger='current',
                              level=logging.WARNING)
                settle(entries, False, labeler.generated - made_before,
                       sum(int((labels[key] == IGNORE_INDEX).all()) for key in labels
                           if key not in failed), set(failed))
        except KeyboardInterrupt:
            interrupted = True
        except UserInputError as exc:  # an image that cannot be read: with what was made so far
            if not counts[0] or isinstance(exc, SettingsRefused):   # (a rerun would stop too)
                raise
            stopped = (str(exc), exc)
        except RuntimeError as exc:  # a full disk, a killed loader process: with the counts
            stopped = (stop_reason(exc), exc)
            if stopped[0] is None:
                raise

    def summary(share: bool) -> PrefillSummary:
        images, made, cached, unsure, repeated, failed, total = (int(c) for c in
                                                                 counts.tolist())
        return PrefillSummary(images, made, cached, seconds=time.perf_counter() - start,
                              total=total, repeated=repeated, failed=failed,
                              cache_dir=str(labeler.cache.cache_dir),
                              cache_size=len(labeler.cache), interrupted=interrupted,
                              unsure=unsure, rank=rank if share else None)
    if stopped is not None:  # (the other ranks stop at their next collective)
        raise JobStopped(stopped[0], summary(share=world_size > 1)) from stopped[1]
    if interrupted and world_size > 1:  # the others label on: this rank does not wait
        return summary(share=True)
    try:
        collective(all_reduce, counts)
    except KeyboardInterrupt:  # waiting for the others: this rank's share is complete
        interrupted = True
        return summary(share=True)
    except RankStopped as exc:
        raise RankStopped(f'{summary(share=True).line()}; {exc}') from exc
    return summary(share=False)
