"""A run longer than its learning-rate decay is named before training: mmengine trained every
iteration past a PolyLR's end at learning rate 0, without a word (``train_cfg.max_iters`` raised
through ``--cfg-options``, the scheduler's ``end`` left)."""
import pytest
from e2e_helpers import TINY_ONLINE_CONFIG
from mmengine.config import Config

from mmdiffseg.preflight_options import check_schedule


@pytest.fixture
def cfg():
    return Config.fromfile(TINY_ONLINE_CONFIG)


def test_a_run_past_the_polys_end_is_named_with_the_fix(cfg):
    assert check_schedule(cfg) == []   # the shipped config: max_iters 4, end 4
    cfg.train_cfg.max_iters = 7
    (item,) = check_schedule(cfg)
    assert item.what == ('train_cfg.max_iters is 7, but param_scheduler.0 (PolyLR, eta_min 0) '
                         'ends at iteration 4: the iterations after it would train at learning '
                         'rate 0')
    assert item.fix.startswith('--cfg-options param_scheduler.0.end=7 (with train_cfg.max_iters')
    cfg.param_scheduler[0].end = 7
    assert check_schedule(cfg) == []


@pytest.mark.parametrize('scheduler', [
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=4, by_epoch=False),  # floor > 0
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, by_epoch=False),            # no end
    dict(type='LinearLR', start_factor=0.1, begin=0, end=4, by_epoch=False),       # warm-up
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=4, by_epoch=True),      # epochs
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=4),      # epochs: mmengine's default
])
def test_other_schedules_are_left_alone(cfg, scheduler):
    cfg.train_cfg.max_iters = 7
    cfg.param_scheduler = [scheduler]
    assert check_schedule(cfg) == []
    cfg.param_scheduler = [scheduler, dict(type='PolyLR', eta_min=0, begin=4, end=7,
                                           by_epoch=False)]
    assert check_schedule(cfg) == []   # a later PolyLR goes on to the end


def test_the_decay_is_found_in_each_form_mmengine_takes(cfg):
    """A PolyLR without eta_min (mmengine's default is 0), one scheduler given without a list
    (named without an index: param_scheduler.0 does not address a dict), and a second decay
    phase after a first (the last one ends the rate) are judged as the list form is."""
    cfg.train_cfg.max_iters = 7
    cfg.param_scheduler = dict(type='PolyLR', power=0.9, begin=0, end=4, by_epoch=False)
    (item,) = check_schedule(cfg)
    assert item.what.startswith('train_cfg.max_iters is 7, but param_scheduler (PolyLR, eta_min '
                                '0) ends at iteration 4')
    assert item.fix.startswith('--cfg-options param_scheduler.end=7 ')
    cfg.param_scheduler = [dict(type='PolyLR', eta_min=0, begin=0, end=2, by_epoch=False),
                           dict(type='PolyLR', eta_min=0, begin=2, end=5, by_epoch=False)]
    (item,) = check_schedule(cfg)
    assert item.where == ['param_scheduler.1.end', 'train_cfg.max_iters']


def test_the_training_pre_flight_runs_the_schedule_check(cfg, monkeypatch):
    """The check is part of training's pre-flight (not of testing's, which runs no schedule)."""
    from mmdiffseg import preflight
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    cfg.train_cfg.max_iters = 7
    assert [m.where for m in preflight.check(cfg, 'train') if 'learning rate 0' in m.what] == [
        ['param_scheduler.0.end', 'train_cfg.max_iters']]
    assert not [m for m in preflight.check(cfg, 'test') if 'learning rate 0' in m.what]
