"""tools/train.py's start from another run's checkpoint (the fine-tune configs' load_from): a
checkpoint of another model or class count was loaded in part (mmengine logs the weights it
skips, to stdout only) and training went on from random weights, exit 0; a load_from that is not
the last checkpoint of its run started the fine-tune from mid-run weights without a word."""
import pytest
import torch
from e2e_helpers import REPO, load_tool
from mmengine.runner import BaseLoop
from torch import nn

TINY_FINETUNE = (REPO / 'configs/mask2former/'
                 'mask2former_tiny-cpu_voc12-finetune-from-synthetic-128x128.py')


class Loop(BaseLoop):
    def run(self):
        pass


def loading_runner(built, loaded, training, resume=False):
    """What Runner.train / Runner.test do with the config's hooks and load_from: the train loop
    is built before the checkpoint loads."""
    from mmseg.registry import HOOKS

    class LoadingRunner:
        def __init__(self, cfg):
            built.append(cfg)
            self.model = nn.Linear(32, 4)
            self.hooks = [HOOKS.build(h) for h in cfg.custom_hooks]
            self._train_loop = Loop(self, []) if training else cfg.get('train_cfg')
            self._resume = resume

        def load(self):
            for hook in self.hooks:
                hook.after_load_checkpoint(self, loaded)
        train = test = load
    return LoadingRunner


def test_a_fine_tune_from_weights_that_do_not_fit_stops_naming_load_from(tmp_path, monkeypatch,
                                                                         capsys):
    """The fine-tune configs list CheckpointFitHook: a checkpoint of another class count stops
    train.py (exit 2) naming load_from and the fine-tune's fixes; tools/test.py with such a
    config adds no second hook."""
    train, test = load_tool('train'), load_tool('test')
    other = dict(state_dict={'weight': torch.zeros(151, 32), 'bias': torch.zeros(151)})
    built = []
    checkpoint = tmp_path / 'iter_4.pth'
    checkpoint.write_bytes(b'w')
    for tool in (train, test):
        monkeypatch.setattr(tool, 'run_preflight', lambda *args: False)
        monkeypatch.setattr(tool, 'start_runner_launcher', lambda cfg, mode: None)
    monkeypatch.setattr(train, 'build_runner', loading_runner(built, other, training=True))
    with pytest.raises(SystemExit) as exit_info:
        train.main([str(TINY_FINETUNE), '--work-dir', str(tmp_path / 'run'), '--cfg-options',
                    f'load_from={checkpoint}'])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"tools/train.py: error: load_from {checkpoint}: the checkpoint's weights do not fit the "
        'model of the config: weight is [151, 32] there, [4, 32] in the model (and 1 more); it '
        'was trained with another config (another class count, another model?), or is no whole '
        'checkpoint of this one: load_from a checkpoint of this model trained on its classes (a '
        'fine-tune: the synthetic-only run of the same config family), or, to keep only the '
        'weights that fit (the rest random), remove CheckpointFitHook from custom_hooks\n')
    # a resumed run: the optimizer state cannot fit either; no hook to remove
    monkeypatch.setattr(train, 'build_runner', loading_runner(built, other, True, resume=True))
    with pytest.raises(SystemExit):
        train.main([str(TINY_FINETUNE), '--work-dir', str(tmp_path / 'run'), '--cfg-options',
                    f'load_from={checkpoint}', 'resume=True'])
    assert capsys.readouterr().err.endswith(
        'whole checkpoint of this one: resume a run of this config (its work dir), or start a '
        'new run (without --resume or resume=True)\n')
    monkeypatch.setattr(test, 'build_runner', loading_runner(built, other, training=False))
    with pytest.raises(SystemExit):
        test.main([str(TINY_FINETUNE), str(checkpoint)])
    assert [h['type'] for h in built[-1].custom_hooks] == ['CheckpointFitHook']
    assert capsys.readouterr().err.endswith('give the config it was trained with\n')


def test_a_load_from_before_its_runs_last_checkpoint_is_named_in_the_log(tmp_path):
    """The fine-tune configs name iter_20000.pth, the synthetic config's last; a longer
    synthetic run keeps it (every checkpoint is kept) and saves later ones (numbers compared as
    numbers: iter_8 is before iter_16)."""
    from mmengine.config import Config
    train = load_tool('train')
    synthetic = tmp_path / 'synthetic'
    synthetic.mkdir()
    for name in ('iter_8.pth', 'iter_16.pth'):
        (synthetic / name).write_bytes(b'w')
    (synthetic / 'last_checkpoint').write_text(str(synthetic / 'iter_16.pth'))
    cfg = Config(dict(load_from=str(synthetic / 'iter_8.pth'), resume=False))
    assert train.start_weights_note(cfg) == (
        f"load_from is {synthetic / 'iter_8.pth'}, but the run that saved it went on to "
        f"{synthetic / 'iter_16.pth'} (its last_checkpoint): this run starts from the earlier "
        f"weights; to start from the last, --cfg-options load_from={synthetic / 'iter_16.pth'}")
    (synthetic / 'best_mIoU_iter_4.pth').write_bytes(b'w')   # chosen, not left behind
    for load_from, resume in ((synthetic / 'iter_16.pth', False), (synthetic / 'iter_8.pth', True),
                              (tmp_path / 'gone.pth', False),
                              (synthetic / 'best_mIoU_iter_4.pth', False)):
        assert train.start_weights_note(Config(dict(load_from=str(load_from),
                                                    resume=resume))) is None


def test_a_rerun_of_a_finished_run_says_there_is_nothing_to_train(tmp_path):
    """--resume of a run at max_iters: mmengine ended at once, exit 0, without a word."""
    from mmengine.config import Config
    train = load_tool('train')
    checkpoint = tmp_path / 'iter_4.pth'
    torch.save(dict(meta=dict(iter=4), state_dict={}), checkpoint)
    cfg = Config(dict(load_from=str(checkpoint), resume=True, train_cfg=dict(max_iters=4)))
    assert train.finished_run_note(cfg) == (
        f'{checkpoint} is at iteration 4, train_cfg.max_iters is 4: the run is finished, nothing '
        'to train (to train longer, start a new run from its weights: --cfg-options load_from='
        f'{checkpoint} with a longer schedule, without --resume)')
    for changed in (dict(train_cfg=dict(max_iters=8)), dict(resume=False)):
        assert train.finished_run_note(Config(dict(cfg.to_dict(), **changed))) is None


def test_a_finished_run_resumed_ends_before_its_runner_is_built(tmp_path, monkeypatch):
    """mmengine walked the data loader through every iteration done before ending."""
    train = load_tool('train')
    work = tmp_path / 'run'
    work.mkdir()
    torch.save(dict(meta=dict(iter=4), state_dict={}), work / 'iter_4.pth')
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    monkeypatch.setattr(train, 'run_preflight', lambda *args: False)

    def never(cfg):
        raise AssertionError('the runner was built')
    monkeypatch.setattr(train, 'build_runner', never)
    logged = []
    monkeypatch.setattr(train, 'print_log', lambda line, **kwargs: logged.append(line))
    train.main([str(TINY_FINETUNE), '--work-dir', str(work), '--resume', '--cfg-options',
                'train_cfg.max_iters=4'])
    assert [line for line in logged if 'the run is finished, nothing to train' in line]
