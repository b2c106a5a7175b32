"""prefill's settings and summary without a Stable Diffusion run: what it takes from the config,
what its arguments override, the rank's share and the summary's wording."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from e2e_helpers import online_config

from mmdiffseg.datasets import LoadPseudoLabel, label_key
from mmdiffseg.models import prefill as prefill_module
from mmdiffseg.models.online_labeler import OnlineLabeler
from mmdiffseg.models.prefill import PrefillSummary, _full_batches, online_dataset_cfgs


def test_the_summary_counts_rate_and_notes():
    summary = PrefillSummary(images=10, made=4, cached=5, seconds=2.0, cache_dir='/c',
                             cache_size=9)
    assert str(summary) == ('prefill: 10 images: made 4, already cached 5, made by another '
                            'process 1; 2.0 s (2.00 labels/s); /c holds 9 labels')
    summary.unsure, summary.interrupted = 3, True
    lines = str(summary).splitlines()
    assert len(lines) == 3 and lines[1].startswith('3 of the labels made (here or by another ')
    assert lines[2] == ('interrupted: rerun the same command to resume (cached images are '
                        'skipped)')
    summary.total = 25   # interrupted: 10 of the 25 images gone through (not a 10-image set)
    assert summary.line().startswith('prefill: 10 of 25 images: made 4, already cached 5')


def test_a_full_batch_is_labelled_before_the_loader_reads_on():
    read = []

    def loader():
        for batch in ([('a', 1, []), ('b', 1, [])], [('c', 1, [])]):
            read.append(batch)
            yield batch
    batches = _full_batches(loader(), 2, lambda *args: None)
    assert [key for key, _, _ in next(batches)] == ['a', 'b'] and len(read) == 1
    assert [key for key, _, _ in next(batches)] == ['c']


def test_only_datasets_with_online_labels_are_prefilled():
    online = dict(type='VOC', pipeline=[dict(type='LoadPseudoLabel', cache={})])
    masks = dict(type='VOC', pipeline=[dict(type='LoadAnnotations')])
    assert online_dataset_cfgs(dict(type='ConcatDataset', datasets=[masks, online])) == [online]
    # a type with its registry's scope, as mmengine builds it, or the class itself
    scoped = dict(type='VOC', pipeline=[dict(type='mmseg.LoadPseudoLabel', cache={})])
    given = dict(type='VOC', pipeline=[dict(type=LoadPseudoLabel, cache={})])
    assert online_dataset_cfgs(dict(type='ConcatDataset', datasets=[scoped, given])) == [
        scoped, given]


def test_a_scoped_online_step_needs_the_labelling_preprocessor():
    """Pre-flight reads ``mmseg.LoadPseudoLabel`` as the step it builds: without the
    preprocessor that makes the labels every target would stay 255."""
    from mmdiffseg.preflight_classes import check_model_classes
    dataset = dict(type='PascalVOCDataset', pipeline=[dict(type='mmseg.LoadPseudoLabel')])
    (item,) = check_model_classes(dict(data_preprocessor=dict(type='SegDataPreProcessor')),
                                  [('train_dataloader.dataset', dataset)])
    assert item.what.startswith('train_dataloader.dataset.pipeline.0 (LoadPseudoLabel) asks for '
                                'online labels, but model.data_preprocessor is '
                                "'SegDataPreProcessor'")
    assert check_model_classes(dict(data_preprocessor=dict(
        type='mmseg.DiffusionLabelPreprocessor')), [('train_dataloader.dataset', dataset)]) == []


def test_arguments_override_the_preprocessor_and_ranks_share_quietly(
        tmp_path, tiny_sd, monkeypatch, capsys):
    """dtype and workers come from the preprocessor and the train dataloader unless given; rank 1
    of 2 labels every other image (the keys training looks up) and draws no progress bar."""
    seen, loaders = [], []

    def label(self, todo, device):
        seen.append((self.options['dtype'], sorted(todo)))
        self.generated += len(todo)
        return {key: np.zeros((4, 4), np.uint8) for key in todo}

    class Loader(torch.utils.data.DataLoader):
        def __init__(self, *args, num_workers, **kwargs):
            loaders.append(num_workers)
            super().__init__(*args, num_workers=0, **kwargs)
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    monkeypatch.setattr(torch.utils.data, 'DataLoader', Loader)
    monkeypatch.setattr(prefill_module, 'get_dist_info', lambda: (1, 2))
    cfg = online_config(tmp_path, tiny_sd)
    cfg.train_dataloader.num_workers = 3
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=4, dtype='float16')
        (tmp_path / 'cache' / 'cache.json').unlink(missing_ok=True)  # (no label was saved)
        prefill_module.prefill(cfg, 'cpu', batch_size=4, workers=1, progress=False)
        [dataset] = prefill_module._build_datasets(
            online_dataset_cfgs(cfg.train_dataloader.dataset))
    assert capsys.readouterr().out == ''
    assert loaders == [3, 1] and summary.images == summary.made == 2
    assert [dtype for dtype, _ in seen] == ['float16', 'float32']
    keys = [label_key(open(dataset[i]['img_path'], 'rb').read(), dataset[i]['image_labels'])
            for i in range(len(dataset))]
    assert seen[0][1] == sorted(keys[1::2])


def test_a_config_that_trains_on_other_labels_is_refused(tmp_path, tiny_sd):
    cfg = online_config(tmp_path, tiny_sd)
    cfg.model.data_preprocessor = Config(dict(type='SegDataPreProcessor'))
    with pytest.raises(ValueError, match='model.data_preprocessor is not a '
                       'DiffusionLabelPreprocessor'):
        prefill_module.prefill(cfg, 'cpu', progress=False)


def test_ctrl_c_keeps_the_counts_of_the_batches_done(tmp_path, tiny_sd, monkeypatch):
    """Interrupted at the second batch: the first one's labels are counted (one all unsure, one
    only partly: not counted as unsure) and the summary says how to resume."""
    def label(self, todo, device):
        if self.generated:
            raise KeyboardInterrupt
        self.generated += len(todo)
        partly = np.zeros((4, 4), np.uint8)
        partly[0] = 255
        labels = dict(zip(todo, [np.full((4, 4), 255, np.uint8), partly]))
        for key, made in labels.items():
            self.cache.save(key, made)
        return labels
    monkeypatch.setattr(OnlineLabeler, 'labels', label)
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(online_config(tmp_path, tiny_sd), 'cpu', batch_size=2,
                                         workers=0, progress=False)
    assert (summary.images, summary.made, summary.unsure, summary.interrupted) == (2, 2, 1, True)
    assert summary.cache_size == 2


def _label_first_batch_then(event):
    """OnlineLabeler.labels that makes the first batch's labels, then raises ``event``."""
    def label(self, todo, device):
        if self.generated:
            raise event
        self.generated += len(todo)
        labels = {key: np.zeros((4, 4), np.uint8) for key in todo}
        for key, made in labels.items():
            self.cache.save(key, made)
        return labels
    return label


def test_an_interrupted_rank_of_several_stops_at_once_with_its_share(tmp_path, tiny_sd,
                                                                     monkeypatch):
    """Rank 1 of 2 interrupted (its own Ctrl-C or SIGTERM) while rank 0 labels on: it returns
    at once with its share's counts (it waited in the all-reduce until rank 0 had labelled its
    whole share, then printed nothing), and the tool prints them and returns 130."""
    cfg = online_config(tmp_path, tiny_sd, names=[f'voc_val_{i}' for i in (
        0, 1, 114, 166, 20, 23, 293, 417)])

    def waits_for_rank_0(counts):
        raise AssertionError('an interrupted rank waited for the others')
    monkeypatch.setattr(OnlineLabeler, 'labels', _label_first_batch_then(KeyboardInterrupt))
    monkeypatch.setattr(prefill_module, 'get_dist_info', lambda: (1, 2))
    monkeypatch.setattr(prefill_module, 'all_reduce', waits_for_rank_0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=0, progress=False)
    assert (summary.images, summary.made, summary.rank, summary.interrupted) == (2, 2, 1, True)
    assert str(summary).startswith("prefill (rank 1's share): 2 of 4 images: made 2, already "
                                   'cached 0, made by another process 0; ')


def test_a_rank_whose_peer_stopped_says_so_in_one_line_with_its_share(tmp_path, tiny_sd,
                                                                      monkeypatch):
    """Rank 0 finished its share; rank 1 was killed: the all-reduce fails (gloo: connection
    closed by peer). Rank 0 stops with the tools' one line (exit 3) naming its share's counts,
    not gloo's traceback; Ctrl-C while it waits there ends it as interrupted, with its share."""
    import mmdiffseg.apis.io as io_module
    from mmdiffseg.apis.io import RankStopped
    cfg = online_config(tmp_path, tiny_sd)

    def peer_killed(counts):
        raise RuntimeError('[pair.cc:561] Connection closed by peer [127.0.0.1]:1234\nmore')
    monkeypatch.setattr(OnlineLabeler, 'labels', _label_first_batch_then(AssertionError))
    monkeypatch.setattr(prefill_module, 'get_dist_info', lambda: (0, 2))
    monkeypatch.setattr(prefill_module, 'all_reduce', peer_killed)
    monkeypatch.setattr(io_module, 'RANK_STOPPED_WAIT_S', 0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        with pytest.raises(RankStopped) as stopped:
            prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=0, progress=False)
    assert str(stopped.value).startswith(
        "prefill (rank 0's share): 2 images: made 2, already cached 0, made by another process "
        '0; ')
    assert str(stopped.value).endswith('; another rank stopped (see its error above); finished '
                                       'items are kept: rerun the same command to resume')

    def ctrl_c(counts):
        raise KeyboardInterrupt
    monkeypatch.setattr(prefill_module, 'all_reduce', ctrl_c)
    with DefaultScope.overwrite_default_scope('mmseg'):
        summary = prefill_module.prefill(cfg, 'cpu', batch_size=2, workers=0, progress=False)
    assert (summary.images, summary.rank, summary.interrupted) == (2, 0, True)


KILLED_PREFILL = '''
import os, signal, sys
from pathlib import Path
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmdiffseg.models import prefill
from mmdiffseg.models.online_labeler import OnlineLabeler

def label(self, todo, device):  # the loader's workers are up: note them, then die as kill -9
    children = Path(f'/proc/{os.getpid()}/task/{os.getpid()}/children').read_text().split()
    Path(sys.argv[2]).write_text(' '.join(children))
    os.kill(os.getpid(), signal.SIGKILL)

OnlineLabeler.labels = label
with DefaultScope.overwrite_default_scope('mmseg'):
    prefill.prefill(Config.fromfile(sys.argv[1]), 'cpu', batch_size=1, workers=2, progress=False)
'''


def test_the_loader_workers_die_with_a_killed_prefill(tmp_path, tiny_sd):
    """kill -9 (the OOM killer, a scheduler's time limit) left the prefill's loader processes
    waiting forever, ~600 MB each: they die with it, as the offline tools' loaders do."""
    import os
    import subprocess
    import sys
    import time
    from e2e_helpers import write_config
    config = write_config(online_config(tmp_path, tiny_sd), tmp_path / 'online.py')
    (tmp_path / 'killed.py').write_text(KILLED_PREFILL)
    pids = tmp_path / 'workers.txt'
    done = subprocess.run([sys.executable, str(tmp_path / 'killed.py'), str(config), str(pids)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    deadline = time.monotonic() + 20
    while any(os.path.exists(f'/proc/{p}') for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in workers if os.path.exists(f'/proc/{p}')]


def test_a_full_cache_is_prefilled_in_another_precision_without_a_refusal(tmp_path, tiny_sd):
    """Every label cached in float32: a bfloat16 prefill adds nothing and was refused at its
    start ('would add labels made in bfloat16'); it reads the cache (all cached), while one
    with a label to make is refused before its first claim."""
    cfg = online_config(tmp_path, tiny_sd)
    with DefaultScope.overwrite_default_scope('mmseg'):
        made = prefill_module.prefill(cfg, 'cpu', batch_size=4, dtype='float32', progress=False)
        again = prefill_module.prefill(cfg, 'cpu', batch_size=4, dtype='bfloat16',
                                       progress=False)
        assert again.made == 0 and again.cached == made.made > 0
        next((tmp_path / 'cache').glob('??/*.png')).unlink()
        with pytest.raises(ValueError, match='holds labels made in float32, and this run would '
                                             'add labels made in bfloat16'):
            prefill_module.prefill(cfg, 'cpu', batch_size=4, dtype='bfloat16', progress=False)


def test_a_prefill_started_on_a_new_cache_records_its_precision_at_once(tmp_path, tiny_sd):
    """Its writer check waits for its first label, not its signing: a later job in another
    precision meets the prefill's record (it took the cache over before)."""
    spec = dict(cache_dir=str(tmp_path / 'cache'), model=str(tiny_sd),
                generator=dict(type='DiffSeg'))
    OnlineLabeler(dtype='float32').bind(spec, check_writer=False)
    import json
    assert json.loads((tmp_path / 'cache' / 'cache.json').read_text())['made_with'] == {
        'dtype': 'float32', 'variant': None}
