"""Pre-flight: the checkpoint a training run starts from. A fine-tune's load_from trained on
the same number of classes in another order (or other ones) loaded each classifier row onto
another class without a word; resume=True on a fine-tune config resumed the synthetic run's
finished checkpoint and ended at once, nothing trained, exit 0."""
import pytest
import torch
from e2e_helpers import REPO
from mmengine.config import Config

from mmdiffseg import preflight
from mmdiffseg.datasets.class_names import DATASET_CLASSES
from mmdiffseg.preflight_checkpoints import check_resumed_run, checkpoint_meta

TINY_FINETUNE = (REPO / 'configs/mask2former/'
                 'mask2former_tiny-cpu_voc12-finetune-from-synthetic-128x128.py')
VOC = list(DATASET_CLASSES['voc'])
SWAPPED = [VOC[0], VOC[8], *VOC[2:8], VOC[1], *VOC[9:]]   # aeroplane and cat swapped


@pytest.fixture(autouse=True)
def no_network_probes(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    preflight.reachable.cache_clear()


def save_checkpoint(path, classes=VOC, iteration=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(meta=dict(iter=iteration, dataset_meta=dict(classes=classes)),
                    state_dict={}), path)
    return str(path)


def found(cfg, where):
    return [m for m in preflight.check(cfg, 'train') if where in m.where]


def test_start_weights_of_the_same_classes_in_another_order_are_refused(tmp_path):
    """Equal class counts, other lists: mmengine loads the classifier as it is. Another count
    is a transfer mmengine handles (the classifier's weights skipped; CheckpointFitHook, which
    the fine-tune configs list, refuses it as it loads); a resumed run is not a fine-tune."""
    cfg = Config.fromfile(str(TINY_FINETUNE))
    cfg.load_from = save_checkpoint(tmp_path / 'synthetic' / 'iter_4.pth', SWAPPED)
    (item,) = found(cfg, 'load_from')
    assert item.what == (
        f"load_from ({cfg.load_from}) was trained on the classes ['background', 'cat', 'bicycle', "
        "'bird', 'boat', 'bottle', '...'] (21 classes), but train_dataloader.dataset has 'voc' "
        "(21 classes); index 1 is 'aeroplane' in train_dataloader.dataset but 'cat' in load_from: "
        "each row of its classifier would start as another class's")
    assert item.fix.startswith('fine-tune from a checkpoint trained on the classes of '
                               'train_dataloader.dataset, in their order')
    cfg.train_dataloader.dataset.metainfo = dict(classes=SWAPPED)   # the fix's other way
    assert found(cfg, 'load_from') == []
    del cfg.train_dataloader.dataset.metainfo
    for classes in (VOC, VOC[:3]):
        cfg.load_from = save_checkpoint(tmp_path / 'synthetic' / 'iter_4.pth', classes)
        assert found(cfg, 'load_from') == []
    cfg.load_from = save_checkpoint(tmp_path / 'synthetic' / 'iter_4.pth', SWAPPED, iteration=1)
    cfg.resume = True
    assert found(cfg, 'load_from') == []


def test_resume_true_of_another_runs_finished_checkpoint_is_refused(tmp_path):
    """resume=True resumes load_from (mmengine): another folder's checkpoint at max_iters
    trains nothing; one short of it, or the work dir's own, is resumed as mmengine does."""
    cfg = Config.fromfile(str(TINY_FINETUNE))
    cfg.work_dir = str(tmp_path / 'finetune')
    cfg.resume = True
    max_iters = cfg.train_cfg.max_iters
    cfg.load_from = save_checkpoint(tmp_path / 'synthetic' / 'iter_4.pth', iteration=max_iters)
    (item,) = check_resumed_run(cfg)
    assert item.what == (
        f"resume=True resumes load_from ({cfg.load_from}), another run's checkpoint, at "
        f'iteration {max_iters}, but train_cfg.max_iters is {max_iters}: the run would end at '
        'once with nothing trained')
    assert item.fix.startswith('to start a new run from its weights (a fine-tune), '
                               'resume=False; to continue the run of the work dir, '
                               'tools/train.py --resume')
    assert [m.where for m in found(cfg, 'resume')] == [['resume', 'load_from']]
    cfg.resume = False
    assert check_resumed_run(cfg) == []
    cfg.resume = True
    save_checkpoint(tmp_path / 'synthetic' / 'iter_4.pth', iteration=max_iters - 1)
    assert check_resumed_run(cfg) == []
    cfg.load_from = save_checkpoint(tmp_path / 'finetune' / 'iter_4.pth', iteration=max_iters)
    assert check_resumed_run(cfg) == []   # this run's own, finished: nothing to do
    # a work dir whose last_checkpoint names one elsewhere (--resume continues that run)
    cfg.load_from = save_checkpoint(tmp_path / 'moved' / 'iter_4.pth', iteration=max_iters)
    assert len(check_resumed_run(cfg)) == 1
    (tmp_path / 'finetune' / 'last_checkpoint').write_text(cfg.load_from)
    assert check_resumed_run(cfg) == []


def test_checkpoint_meta_is_empty_for_what_records_none(tmp_path):
    (tmp_path / 'w.pth').write_bytes(b'not a checkpoint')
    torch.save([1, 2], tmp_path / 'list.pth')
    torch.save(dict(meta='x'), tmp_path / 'str.pth')
    for name in ('w.pth', 'list.pth', 'str.pth', 'gone.pth'):
        assert checkpoint_meta(str(tmp_path / name)) == {}
    assert checkpoint_meta(save_checkpoint(tmp_path / 'c.pth'))['iter'] == 4


def test_a_validation_set_in_another_order_names_each_side():
    """'index 8 is X there but Y in the dataset' read the other way round for a validation set
    compared with the training set: each side is named."""
    cfg = Config.fromfile(str(TINY_FINETUNE))
    cfg.val_dataloader.dataset.metainfo = dict(classes=SWAPPED)
    (item,) = found(cfg, 'val_dataloader.dataset.metainfo')
    assert "; index 1 is 'cat' in val_dataloader.dataset but 'aeroplane' in " \
           'train_dataloader.dataset: ' in item.what


def test_a_resumed_run_past_its_checkpoints_schedule_is_refused(tmp_path):
    """--resume with a raised max_iters: the pre-flight named param_scheduler.0.end to raise;
    doing so passed, and the resumed run trained its new iterations at learning rate 0
    (mmengine restores the schedule's end from the checkpoint)."""
    cfg = Config.fromfile(str(TINY_FINETUNE))
    cfg.work_dir = str(tmp_path / 'run')
    cfg.resume = True
    end = cfg.train_cfg.max_iters
    poly = dict(eta_min=0, power=0.9, begin=0, end=end, by_epoch=False)
    cfg.load_from = str(tmp_path / 'run' / 'iter_2.pth')
    (tmp_path / 'run').mkdir()
    torch.save(dict(meta=dict(iter=2), param_schedulers=[poly], state_dict={}), cfg.load_from)
    assert found(cfg, 'train_cfg.max_iters') == []
    for config_end in (end, 2 * end):   # the config's end: the checkpoint's counts
        cfg.train_cfg.max_iters = 2 * end
        cfg.param_scheduler[0].end = config_end
        (item,) = found(cfg, 'train_cfg.max_iters')
        assert item.what.startswith(
            f'the run resumed from {cfg.load_from} keeps its learning-rate schedule, whose PolyLR '
            f'(eta_min 0) ends at iteration {end}: its iterations {end + 1} to '
            f'train_cfg.max_iters {2 * end} would train at learning rate 0')
        assert item.fix.startswith(f'to train longer, start a new run from its weights: '
                                   f'--cfg-options load_from={cfg.load_from} train_cfg.max_iters='
                                   f'{2 * end} param_scheduler.0.end={2 * end}, without --resume')
    cfg.resume = False   # a new run: the config's schedule is checked
    cfg.param_scheduler[0].end = end
    (item,) = found(cfg, 'train_cfg.max_iters')
    assert item.what.startswith(f'train_cfg.max_iters is {2 * end}, but param_scheduler.0')


def test_the_decay_after_a_warm_up_is_the_schedule_judged(tmp_path):
    """LinearLR warm-up, then PolyLR: the fix named param_scheduler.0 (the warm-up); raising its
    end passed, and the run trained from the PolyLR's end at learning rate 0."""
    from mmdiffseg.preflight_options import check_schedule
    warm = dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500)
    poly = dict(type='PolyLR', eta_min=0, power=0.9, by_epoch=False, begin=1500, end=20000)
    cfg = Config(dict(train_cfg=dict(max_iters=40000), param_scheduler=[warm, poly]))
    (item,) = check_schedule(cfg)
    assert item.fix.startswith('--cfg-options param_scheduler.1.end=40000')
    cfg.param_scheduler[0].end = 40000   # the wrong one raised
    assert len(check_schedule(cfg)) == 1
    cfg.param_scheduler[1].end = 40000
    assert check_schedule(cfg) == []
    # a scheduler after the decay sets the rate again: no refusal
    cosine = dict(type='CosineAnnealingLR', eta_min=1e-3, by_epoch=False, begin=20000, end=40000)
    cfg.param_scheduler = [warm, poly, cosine]
    assert check_schedule(cfg) == []
    checkpoint = tmp_path / 'run' / 'iter_8.pth'
    checkpoint.parent.mkdir()
    torch.save(dict(meta=dict(iter=8), state_dict={}, param_schedulers=[
        dict(warm, start_factor=1e-6), dict(poly)]), checkpoint)
    cfg = Config(dict(train_cfg=dict(max_iters=40000), resume=True, load_from=str(checkpoint),
                      work_dir=str(tmp_path / 'run')))
    from mmdiffseg.preflight_checkpoints import check_resumed_schedule
    (item,) = check_resumed_schedule(cfg)
    assert 'param_scheduler.1.end=40000, without --resume' in item.fix


def test_a_resumed_schedule_is_refused_only_where_it_would_train_at_rate_0(tmp_path):
    """A checkpoint's PolyLR with a floor (eta_min > 0) trains on past its end; a finished run
    (at max_iters) trains nothing more: neither is refused. A resumed run without a checkpoint
    yet (the first start of a resume=True config) is judged on the config's schedule."""
    from mmdiffseg.preflight_checkpoints import check_resumed_schedule, check_run_start
    poly = dict(eta_min=0, power=0.9, begin=0, end=20, by_epoch=False)
    checkpoint = tmp_path / 'run' / 'iter_8.pth'
    checkpoint.parent.mkdir()
    cfg = Config(dict(train_cfg=dict(max_iters=40), resume=True, load_from=str(checkpoint),
                      work_dir=str(tmp_path / 'run')))
    for iteration, schedule, refused in ((8, poly, True), (8, dict(poly, eta_min=1e-4), False),
                                         (40, poly, False)):
        torch.save(dict(meta=dict(iter=iteration), state_dict={}, param_schedulers=[schedule]),
                   checkpoint)
        assert len(check_resumed_schedule(cfg)) == refused, (iteration, schedule)
    cfg.load_from = None
    cfg.param_scheduler = [dict(poly, type='PolyLR')]
    (item,) = check_run_start(cfg, None, [])
    assert item.where == ['param_scheduler.0.end', 'train_cfg.max_iters']
