"""What the thin tool scripts hand on to mmdiffseg.apis: each option's value (and each default)
reaches the job function, with the job itself stubbed (no model is loaded)."""
import importlib
import os

import numpy as np
import pytest
from PIL import Image

from e2e_helpers import TINY_ONLINE_CONFIG, load_tool
from mmdiffseg.apis.io import JobSummary


def capture(monkeypatch, module, name):
    """Replace ``module.name`` by a stub that records its arguments; returns the record."""
    api = importlib.import_module(module)
    seen = {}

    def job(*args, **kwargs):
        seen.update(args=args, **kwargs)
        return JobSummary()
    monkeypatch.setattr(api, name, job)
    return seen


def test_synthesize_defaults_reach_the_job(monkeypatch, tmp_path):
    """One image per class at 512 px, run seed 0 hashed per image, split train, no templates."""
    seen = capture(monkeypatch, 'mmdiffseg.apis.synthesize', 'synthesize')
    assert load_tool('synthesize').main(['--classes', 'cat,dog', '--device', 'cpu',
                                         '--out', str(tmp_path / 'o')]) == 0
    assert seen['args'][0] == ['cat', 'dog'] and seen['label_set'] is None
    assert (seen['images_per_class'], seen['size'], seen['seed']) == (1, 512, 0)
    assert (seen['seed_per_image'], seen['split'], seen['prompts']) == ('hash', 'train', None)


def test_synthesize_options_reach_the_job(monkeypatch, tmp_path):
    seen = capture(monkeypatch, 'mmdiffseg.apis.synthesize', 'synthesize')
    load_tool('synthesize').main([
        '--classes', 'cat,', '--label-set', 'voc', '--images-per-class', '3', '--seed', '7',
        '--seed-per-image', 'index', '--size', '256', '--split', 'extra', '--prompt',
        'a {} here', '--prompt', 'two {}', '--batch-size', '2', '--device', 'cpu',
        '--out', str(tmp_path / 'o')])
    assert seen['label_set'][0] == 'background' and len(seen['label_set']) == 21
    assert (seen['images_per_class'], seen['size'], seen['seed']) == (3, 256, 7)
    assert (seen['seed_per_image'], seen['split']) == ('index', 'extra')
    assert seen['prompts'] == ['a {} here', 'two {}'] and seen['batch_size'] == 2


@pytest.fixture
def one_image(tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / 'a.png')
    labels = tmp_path / 'labels.json'
    labels.write_text('{"a": ["cat"]}')
    return folder, labels


def test_pseudo_label_options_reach_the_job(monkeypatch, one_image, tmp_path):
    folder, labels = one_image
    seen = capture(monkeypatch, 'mmdiffseg.apis.pseudo_label', 'pseudo_label')
    load_tool('pseudo_label').main([str(folder), '--labels', str(labels), '--classes', 'voc',
                                    '--split', 'val', '--batch-size', '3', '--device', 'cpu',
                                    '--out', str(tmp_path / 'o')])
    items, _, _, _, classes, image_labels = seen['args']
    assert [it.id for it in items] == ['a'] and classes[:2] == ['background', 'aeroplane']
    assert image_labels == {'a': ['cat']}
    assert (seen['split'], seen['batch_size']) == ('val', 3)


def test_pseudo_label_without_classes_is_refused_for_a_labelled_generator(one_image, tmp_path):
    """iSeg (the default) labels with --classes: none given is a usage error (status 2)."""
    folder, labels = one_image
    from test_offline_tools import run_in_process
    err = run_in_process('pseudo_label', folder, '--labels', labels, '--device', 'cpu',
                         '--out', tmp_path / 'o', expect=2)
    assert 'give --classes' in err


@pytest.mark.parametrize('args, vocabulary', [
    (['--config', 'configs/iseg/iseg_wsss_coco.py'], 'coco_object'),
    (['--config', 'configs/iseg/iseg_ovs_context.py'], 'context59'),
    (['--config', 'configs/iseg/iseg_ovs_coco_object.py', '--classes', 'coco_object'],
     'coco_object'),
    (['--method', 'iseg', '--classes', 'context59'], 'context59')])
def test_an_iseg_presets_vocabulary_is_its_label_set_and_a_class_set(
        monkeypatch, one_image, tmp_path, args, vocabulary):
    """The COCO and Context presets run by name: their vocabulary's classes (COCO-Object's
    background + 80, Context's 59) are the label set without --classes, and class sets of it."""
    from mmdiffseg.generators.class_names import VOCABULARIES
    folder, labels = one_image
    seen = capture(monkeypatch, 'mmdiffseg.apis.pseudo_label', 'pseudo_label')
    load_tool('pseudo_label').main([str(folder), '--labels', str(labels), *args,
                                    '--device', 'cpu', '--out', str(tmp_path / 'o')])
    assert seen['args'][4] == list(VOCABULARIES[vocabulary]['classes'])


def test_a_generator_config_with_its_own_classes_is_not_given_its_vocabularys(
        one_image, tmp_path):
    """A config listing classes beside its vocabulary: those are no class set, so --classes is
    asked for, not the vocabulary's classes silently put in their place."""
    from test_offline_tools import run_in_process
    folder, labels = one_image
    err = run_in_process('pseudo_label', folder, '--labels', labels, '--config',
                         'configs/iseg/iseg_wsss_coco.py', '--cfg-options',
                         "classes=['background','person']", '--device', 'cpu',
                         '--out', tmp_path / 'o', expect=2)
    assert 'give --classes' in err


def test_a_presets_ground_truth_is_read_as_its_class_sets_dataset_reads_it(monkeypatch, tmp_path):
    """ADE20K's preset without --classes reads ADE20K's annotations as --classes ade20k does
    (0 = other, k = class k-1): the same image-level labels, not classes one off."""
    from sample_data import shared_path
    ade = shared_path('ade20k_val_samples')
    seen = capture(monkeypatch, 'mmdiffseg.apis.pseudo_label', 'pseudo_label')
    runs = []
    for extra in ([], ['--classes', 'ade20k']):
        load_tool('pseudo_label').main([str(ade / 'images'), '--labels-from-gt',
                                        str(ade / 'annotations'), '--config',
                                        'configs/iseg/iseg_wsss_ade20k.py', *extra,
                                        '--device', 'cpu', '--out', str(tmp_path / 'o')])
        runs.append(seen['args'][5])
    assert runs[0] == runs[1] and len(runs[0]) == 3
    assert 'wall' in runs[0]['ADE_val_00000001']


def test_segment_sheet_settings_and_where_the_sheet_goes(monkeypatch, tmp_path):
    """The sheet of --contact-sheet FOLDER goes to <--out>/contact_sheet.jpg when --out is
    given, drawn with the sheet options (defaults: 8 columns, legend on)."""
    visualize = importlib.import_module('mmdiffseg.apis.visualize')
    calls = []
    monkeypatch.setattr(visualize, 'write_contact_sheet',
                        lambda folder, path, **kw: calls.append((folder, path, kw)))
    tool = load_tool('segment')
    assert tool.main(['--contact-sheet', str(tmp_path / 'f'), '--out', str(tmp_path / 'o')]) == 0
    assert str(calls[-1][1]) == str(tmp_path / 'o' / 'contact_sheet.jpg')
    assert calls[-1][2] == dict(cols=8, thumb=160, max_items=64, legend=True)
    tool.main(['--contact-sheet', str(tmp_path / 'f'), '--cols', '3', '--no-legend'])
    assert str(calls[-1][1]) == str(tmp_path / 'f' / 'contact_sheet.jpg')
    assert calls[-1][2]['cols'] == 3 and calls[-1][2]['legend'] is False


def test_prefill_hands_on_its_options_and_exits_130_when_interrupted(monkeypatch):
    """--compile alone means inductor, set in the config's engine kwargs; batch size, dtype and
    workers reach the prefill; an interrupted prefill exits 130 (as Ctrl-C)."""
    prefill = importlib.import_module('mmdiffseg.models.prefill')
    seen = {}

    class Summary:
        interrupted, rank = True, None

    def stub(cfg, device, **kwargs):
        seen.update(cfg=cfg, device=device, **kwargs)
        return Summary()
    monkeypatch.setattr(prefill, 'prefill', stub)
    status = load_tool('prefill_labels').main([  # run_cli's status, which leaves the group
        str(TINY_ONLINE_CONFIG), '--skip-preflight', '--compile', '--batch-size', '2',
        '--workers', '0', '--dtype', 'bfloat16', '--device', 'cpu',
        '--cfg-options', 'train_dataloader.batch_size=5'])
    assert status == 130
    engine = seen['cfg'].model.data_preprocessor.engine_kwargs
    assert engine['compile_unet'] == dict(backend='inductor')
    assert seen['cfg'].train_dataloader.batch_size == 5
    assert (seen['batch_size'], seen['workers'], seen['dtype']) == (2, 0, 'bfloat16')


@pytest.mark.parametrize('name', ['sheet.jpg', 'sheet.JPEG', 'sheet.png'])
def test_segment_refuses_an_image_file_name_as_out(tmp_path, name):
    """--out is a folder: an image file name (any case) is a usage error, status 2."""
    from test_offline_tools import run_in_process
    err = run_in_process('segment', '--contact-sheet', tmp_path, '--out', tmp_path / name,
                         expect=2)
    assert '--out is a folder' in err and name in err


def test_train_and_test_hand_on_the_launcher_and_the_wait_time(monkeypatch):
    """--launcher reaches the config (mmengine starts the ranks from it); --wait-time the
    visualization hook of --show."""
    train = load_tool('train')
    args = train.parse_args([str(TINY_ONLINE_CONFIG), '--launcher', 'slurm', '--work-dir', 'w'])
    cfg = train.load_config(args)
    assert cfg.launcher == 'slurm' and cfg.work_dir == 'w'
    test = load_tool('test')
    seen = {}
    monkeypatch.setattr(test, 'run_preflight', lambda args, cfg, *a: seen.update(cfg=cfg) or True)
    test.main([str(TINY_ONLINE_CONFIG), __file__, '--show', '--wait-time', '0.5',
               '--show-interval', '3', '--skip-preflight'])
    hook = seen['cfg'].default_hooks.visualization
    assert (hook.show, hook.wait_time, hook.interval) == (True, 0.5, 3)
    assert seen['cfg'].load_from == __file__


def test_pseudo_label_reads_ground_truth_under_the_gt_suffix(monkeypatch, one_image, tmp_path):
    """--gt-suffix names the ground-truth file of image ``a``: a_gt.png, whose values 0 and 8
    are VOC's background and cat."""
    folder, _ = one_image
    gt = tmp_path / 'gt'
    gt.mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 8
    Image.fromarray(mask).save(gt / 'a_gt.png')
    seen = capture(monkeypatch, 'mmdiffseg.apis.pseudo_label', 'pseudo_label')
    load_tool('pseudo_label').main([str(folder), '--labels-from-gt', str(gt), '--gt-suffix',
                                    '_gt.png', '--classes', 'voc', '--device', 'cpu',
                                    '--out', str(tmp_path / 'o')])
    assert seen['args'][5] == {'a': ['cat']}


def test_pseudo_label_and_segment_refuse_contradicting_inputs(one_image, tmp_path):
    """Usage errors (status 2) before any model: a folder and --dataset-config together,
    --fine-labels with --dataset-config, DiffSeg with --classes but no image-level labels,
    segmenting with iSeg without --classes; --labels-from-gt without --classes or (for an image
    folder) its GT_DIR; segment without an input or without --out."""
    from test_offline_tools import run_in_process
    folder, labels = one_image
    out = ['--device', 'cpu', '--out', tmp_path / 'o']
    err = run_in_process('pseudo_label', folder, '--dataset-config', tmp_path / 'c.py',
                         '--labels', labels, '--classes', 'voc', *out, expect=2)
    assert 'give an image folder or --dataset-config (one of them)' in err
    err = run_in_process('pseudo_label', '--dataset-config', tmp_path / 'c.py', '--fine-labels',
                         '--labels', labels, *out, expect=2)
    assert '--fine-labels is for a ground-truth folder' in err
    err = run_in_process('pseudo_label', folder, '--method', 'diffseg', '--classes', 'voc', *out,
                         expect=2)
    assert 'DiffSeg needs image-level labels' in err
    err = run_in_process('segment', folder / 'a.png', *out, expect=2)
    assert 'ISeg needs --classes' in err
    err = run_in_process('pseudo_label', folder, '--labels-from-gt', folder, *out, expect=2)
    assert 'error: --labels-from-gt needs --classes (the GT label set)' in err
    err = run_in_process('pseudo_label', folder, '--labels-from-gt', '--classes', 'voc', *out,
                         expect=2)
    assert 'error: --labels-from-gt needs GT_DIR, the ground-truth folder' in err
    # the folder written after --labels-from-gt is its GT_DIR: no image folder was given
    err = run_in_process('pseudo_label', '--labels-from-gt', folder, '--classes', 'voc', *out,
                         expect=2)
    assert (f'error: give an image folder or --dataset-config (one of them) (--labels-from-gt '
            f'took {folder} as its GT_DIR: give the image folder first)') in err
    err = run_in_process('segment', '--device', 'cpu', expect=2)
    assert 'error: give an image or folder to segment, or --contact-sheet FOLDER' in err
    err = run_in_process('segment', folder, '--classes', 'voc', '--device', 'cpu', expect=2)
    assert 'error: give --out, the output folder' in err


def test_classes_given_override_the_dataset_configs(monkeypatch, tmp_path):
    """--classes is the label set even when --dataset-config's dataset has its own (ADE20K)."""
    from sample_data import shared_path
    annotations = shared_path('ade20k_val_samples', 'annotations')
    config = tmp_path / 'ade.py'
    config.write_text(f'val_dataloader = dict(dataset=dict(type="ADE20KDataset", data_root='
                      f'{str(annotations.parent)!r}, data_prefix=dict(img_path="images", '
                      'seg_map_path="annotations")))\n')
    labels = tmp_path / 'labels.json'
    labels.write_text('{}')
    seen = capture(monkeypatch, 'mmdiffseg.apis.pseudo_label', 'pseudo_label')
    load_tool('pseudo_label').main(['--dataset-config', str(config), '--split', 'val',
                                    '--labels', str(labels), '--classes', 'cat,dog',
                                    '--device', 'cpu', '--out', str(tmp_path / 'o')])
    assert seen['args'][4] == ['cat', 'dog']


def test_resume_in_an_empty_work_dir_starts_a_new_run_from_load_from(tmp_path):
    """No checkpoint yet: no resume (mmengine would resume from load_from's weights, with their
    optimizer state and iteration), load_from kept, and the warning names it."""
    from mmengine.config import Config
    cfg = Config(dict(work_dir=str(tmp_path), load_from='start.pth'))
    note = load_tool('train').resume_from_work_dir(cfg)
    assert cfg.resume is False and cfg.load_from == 'start.pth'
    assert "load_from's weights (start.pth)" in note


def test_ground_truth_in_the_labels_folder_of_a_job_folder_is_refused(one_image, tmp_path):
    """--labels-from-gt GT_DIR where the run writes its label PNGs (<out>/SegmentationClass)
    stops before any model, even in a job folder (a manifest), which the check of folders
    holding files in the way lets through."""
    from test_offline_tools import run_in_process
    folder, _ = one_image
    out = tmp_path / 'o'
    (out / 'SegmentationClass').mkdir(parents=True)
    (out / 'manifest.jsonl').write_text('')
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(out / 'SegmentationClass' / 'a.png')
    err = run_in_process('pseudo_label', folder, '--labels-from-gt', out / 'SegmentationClass',
                         '--classes', 'voc', '--device', 'cpu', '--out', out, expect=2)
    assert (f'error: the ground truth in {out}/SegmentationClass lies where this run writes its '
            f'label PNGs (--out {out}): they would replace it') in err
    assert sorted(p.name for p in out.rglob('*')) == ['SegmentationClass', 'a.png',
                                                      'manifest.jsonl']


def test_a_label_cache_that_cannot_be_written_stops_training_with_one_line(monkeypatch, tmp_path,
                                                                           capsys):
    """The label cache's disk filling mid-training: a bare OSError traceback (prefill gave one
    line); now the cache's write error, what is kept and the fix, exit status 3."""
    import errno
    from mmdiffseg.apis import io
    from mmdiffseg.datasets import LabelCache
    train = load_tool('train')
    cache = LabelCache(tmp_path / 'cache', 'org/sd', dict(type='DiffSeg'))
    monkeypatch.setattr(io.os, 'fsync', lambda fd: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))

    class Runner:
        def train(self):
            cache.save('ab' * 20, np.zeros((4, 4), np.uint8))
    monkeypatch.setattr(train, 'build_runner', lambda cfg: Runner())
    with pytest.raises(SystemExit) as stopped:
        train.main([str(TINY_ONLINE_CONFIG), '--skip-preflight', '--work-dir', str(tmp_path)])
    assert stopped.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f'tools/train.py: error: cannot write {tmp_path}/cache/cache.json: the disk is full')
    assert err[0].endswith('the checkpoints and labels written so far are kept: fix that, then '
                           'rerun with --resume')


def test_a_label_cache_refused_mid_training_in_a_loader_worker_is_one_error(monkeypatch, tmp_path,
                                                                            capsys):
    """A cache holding another config's labels found during training (pre-flight skipped, or two
    runs signing a new cache at once), in a DataLoader worker process: the cache's message
    without torch's worker traceback, exit status 2 (a traceback and status 1 before)."""
    import torch
    from mmdiffseg.datasets import LabelCache
    train = load_tool('train')
    cache_dir = tmp_path / 'cache'
    LabelCache(cache_dir, 'org/sd', dict(type='DiffSeg', kl_thresholds=(0.9,) * 3)).sign()

    class Labels(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return LabelCache(cache_dir, 'org/sd', dict(type='DiffSeg')).load('ab' * 20)

    class Runner:
        def train(self):
            list(torch.utils.data.DataLoader(Labels(), num_workers=1))
    monkeypatch.setattr(train, 'build_runner', lambda cfg: Runner())
    with pytest.raises(SystemExit) as stopped:
        train.main([str(TINY_ONLINE_CONFIG), '--skip-preflight', '--work-dir', str(tmp_path)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f'tools/train.py: error: label cache {cache_dir} holds labels made '
                          'with other settings:\n  generator.kl_thresholds: cache [0.9, 0.9, 0.9]')
    assert 'Traceback' not in err and 'worker' not in err
