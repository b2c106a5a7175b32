"""End to end on CPU: tools/train.py and tools/test.py with the tiny Mask2Former configs.

1. Online labels: a tiny random-weights SD + iSeg label the VOC samples inside training; the
   cache is filled once, a second run generates nothing; tools/test.py reports mIoU.
2. Synthetic folder -> fine-tune on real data from the synthetic checkpoint; --resume continues
   the fine-tune run, not the synthetic one.
3. DiffSeg's training-free evaluation (no checkpoint; --out writes the scored predictions).
"""
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from sample_data import shared_path
from e2e_helpers import (REPO, TINY_ONLINE_CONFIG, VOC_IMAGES, free_port, load_tool, make_voc_root,
                         run_tool, set_label_cache, set_voc_data, train_log, write_config)
from mmengine.config import Config
from mmseg.registry import DATASETS
from PIL import Image

import mmdiffseg  # noqa: F401
from mmdiffseg.datasets import DATASET_CLASSES
from mmdiffseg.evaluation.unsupervised_metric import HungarianMatchedIoU, match_segments
from mmdiffseg.provenance import model_identity

CONFIGS = REPO / 'configs' / 'mask2former'
TINY_SYNTHETIC = CONFIGS / 'mask2former_tiny-cpu_voc12-seediff-synthetic-128x128.py'
TINY_FINETUNE = CONFIGS / 'mask2former_tiny-cpu_voc12-finetune-from-synthetic-128x128.py'


@pytest.mark.slow
def test_online_labels_are_made_once_cached_and_drawn(tmp_path, tiny_sd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'voc')
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    set_voc_data(cfg, root)
    cache_dir = tmp_path / 'cache'
    set_label_cache(cfg, dict(cache_dir=str(cache_dir), model=str(tiny_sd),
                              generator=cfg.tiny_label_generator.to_dict()))
    # the visualizer is a per-process instance by name: a fresh one saves under this run
    cfg.visualizer.name = f'visualizer-{tmp_path.name}'
    config = write_config(cfg, tmp_path / 'online.py')

    run_tool('train', config, '--work-dir', tmp_path / 'run1')
    labels = sorted(cache_dir.glob('??/*.png'))
    assert len(labels) == 4                        # every training image, once
    signature = json.loads((cache_dir / 'cache.json').read_text())
    assert signature['model'] == model_identity(str(tiny_sd))
    assert signature['generator']['method'] == 'iseg'
    rows = train_log(tmp_path / 'run1')
    assert len(rows) == 4 and rows[0]['label_generated'] == 2   # cold: the batch of 2
    assert all('label_coverage' in r and 'label_seconds' in r for r in rows)
    assert rows[-1]['label_generated'] < rows[0]['label_generated']  # epoch 2 reads the cache
    assert [r['label_generated_total'] for r in rows] == list(
        np.cumsum([r['label_generated'] for r in rows]))   # the run's total, at every log
    # and the labels read from the cache: the rest of each batch of 2 (none waited for)
    assert [r['label_read_total'] for r in rows] == [
        2 * (i + 1) - r['label_generated_total'] for i, r in enumerate(rows)]
    assert rows[-1]['label_read_total'] > 0
    check_label_pictures(tmp_path / 'run1', iters=(2, 4))
    # a second run on the full cache generates nothing (test_prefill_and_ranks.py), and the
    # checkpoint's mIoU through tools/test.py is the README's smoke path (test_readme_smoke.py)


def check_label_pictures(work_dir, iters):
    """OnlineLabelVisualizationHook (interval 2, one image) drew a training crop (at most 128 px)
    with its label every 2 iterations, named by its image (what is drawn: tests/models)."""
    pictures = sorted(work_dir.glob('*/vis_data/vis_image/online_label_*.png'),
                      key=lambda p: int(p.stem.rsplit('_', 1)[1]))
    assert [int(p.stem.rsplit('_', 1)[1]) for p in pictures] == list(iters), pictures
    for picture in pictures:
        image = picture.stem[len('online_label_'):].rsplit('_', 1)[0]
        assert re.fullmatch(r'voc_val_\d+\.png', image), picture.name
    for picture in pictures:
        assert 32 <= min(Image.open(picture).size) <= max(Image.open(picture).size) <= 128


def make_synthetic_folder(root):
    """The folder tools/synthesize.py writes (JPEG images, palette masks, split, manifest)."""
    voc = shared_path('voc2012_val_samples')
    names = ['voc_val_114', 'voc_val_166', 'voc_val_293', 'voc_val_417']
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.open(voc / 'JPEGImages' / f'{name}.png').convert('RGB').save(
            root / 'JPEGImages' / f'{name}.jpg')
        shutil.copy(voc / 'SegmentationClass' / f'{name}.png', root / 'SegmentationClass')
    (root / 'ImageSets/Segmentation/train.txt').write_text('\n'.join(names) + '\n')
    from mmdiffseg.datasets import DATASET_CLASSES
    (root / 'manifest.jsonl').write_text(json.dumps(
        dict(tool='synthesize', classes=list(DATASET_CLASSES['voc']))) + '\n')
    return root


@pytest.mark.slow
def test_synthetic_then_finetune_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'voc')
    cfg = Config.fromfile(str(TINY_SYNTHETIC))
    cfg.train_dataloader.dataset.data_root = str(make_synthetic_folder(tmp_path / 'synthetic'))
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.update(data_root=str(real), img_suffix='.png')
    run_tool('train', write_config(cfg, tmp_path / 'synthetic.py'), '--work-dir',
             tmp_path / 'synthetic_run', '--cfg-options', 'train_cfg.max_iters=2')
    checkpoint = tmp_path / 'synthetic_run' / 'iter_2.pth'
    assert checkpoint.is_file()

    cfg = Config.fromfile(str(TINY_FINETUNE))
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.update(data_root=str(real), img_suffix='.png')
    cfg.load_from = str(checkpoint)
    # --resume with nothing in the work dir yet: a new run from load_from's weights
    out = run_tool('train', write_config(cfg, tmp_path / 'finetune.py'), '--work-dir',
                   tmp_path / 'finetune_run', '--resume', '--cfg-options', 'train_cfg.max_iters=2')
    log = next((tmp_path / 'finetune_run').glob('*/*.log')).read_text()
    assert f'Load checkpoint from {checkpoint}' in log and 'resumed' not in log
    assert f'--resume: no checkpoint in {tmp_path / "finetune_run"} yet; a new run starts from ' \
           f"load_from's weights ({checkpoint})" in log
    assert len(train_log(tmp_path / 'finetune_run')) == 2
    assert re.findall(r'mIoU: ([0-9.]+)', out)
    # --resume again: the fine-tune run's own checkpoint, not load_from (the synthetic one);
    # mmengine checkpoints load under torch >= 2.6
    run_tool('train', tmp_path / 'finetune.py', '--work-dir', tmp_path / 'finetune_run',
             '--resume', '--cfg-options', 'train_cfg.max_iters=3')
    log = sorted((tmp_path / 'finetune_run').glob('*/*.log'))[-1].read_text()
    assert f'Load checkpoint from {tmp_path / "finetune_run" / "iter_2.pth"}' in log
    assert f'Load checkpoint from {checkpoint}' not in log
    assert 'resumed epoch: 0, iter: 2' in log and 'Iter(train) [3/3]' in log


def coco_stuff_root(root):
    """data/coco_stuff164k in miniature: the 2 COCO samples, COCO-Stuff-style fine labels (each
    27-class label of the sample written as the first fine id of its class, minus 1), the
    curated list."""
    from mmdiffseg.datasets.class_names import COCOSTUFF27_FINE_IDS
    samples = shared_path('coco_val_samples', 'panopticapi')
    fine = np.full(256, 255, np.uint8)
    fine[:27] = [ids[0] - 1 for ids in COCOSTUFF27_FINE_IDS.values()]
    names = []
    for label in sorted((samples / 'cocostuff27_derived').glob('*.png')):
        for sub in ('images/val2017', 'annotations/val2017', 'curated/val2017'):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(samples / 'input_images' / f'{label.stem}.jpg', root / 'images/val2017')
        Image.fromarray(fine[np.array(Image.open(label))]).save(
            root / 'annotations/val2017' / label.name)
        names.append(label.stem)
    (root / 'curated/val2017/Coco164kFull_Stuff_Coarse_7.txt').write_text('\n'.join(names))
    return root


@pytest.mark.slow
@pytest.mark.parametrize('dataset', ['cityscapes27', 'cocostuff27'])
def test_diffseg_unsupervised_evaluation_without_checkpoint(tmp_path, tiny_sd, monkeypatch,
                                                             dataset):
    """tools/test.py runs the training-free DiffSeg configs (Hungarian-matched ACC / mIoU); the
    scored predictions (--out) and pictures (--show-dir) are at the evaluated size."""
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(str(CONFIGS / f'diffseg-sd14_{dataset}-unsupervised-512x512.py'))
    cfg.model.sd_model = str(tiny_sd)
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    if dataset == 'cityscapes27':
        cfg.test_dataloader.dataset.data_root = str(shared_path('cityscapes_val_sample'))
    else:
        cfg.test_dataloader.dataset.data_root = str(coco_stuff_root(tmp_path / 'coco'))
    cfg.val_dataloader = cfg.test_dataloader
    cfg.visualizer.name = f'visualizer-{tmp_path.name}'   # a per-process instance by name
    out = run_tool('test', write_config(cfg, tmp_path / 'diffseg.py'), '--work-dir',
                   tmp_path / 'eval', '--out', tmp_path / 'preds', '--show-dir', 'drawn')
    acc = re.findall(r'ACC: ([0-9.]+)', out)
    miou = re.findall(r'mIoU: ([0-9.]+)', out)
    assert acc and miou and 0 < float(acc[-1]) <= 100 and 0 < float(miou[-1]) <= 100
    # --out: the scored segment ids, at the evaluated size (the label after crop and resize)
    samples = [s['data_samples'] for s in DATASETS.build(cfg.test_dataloader.dataset)]
    names = [osp.splitext(osp.basename(s.img_path))[0] + '.png' for s in samples]
    # (and the manifest saying they are segment ids, which eval_labels.py reads)
    assert sorted(p.name for p in (tmp_path / 'preds').iterdir()) == sorted(
        names + ['manifest.json'])
    scores = []
    for sample, name in zip(samples, names):
        gt = sample.gt_sem_seg.data.squeeze().numpy()
        pred = np.array(Image.open(tmp_path / 'preds' / name))
        assert pred.shape == gt.shape == (512, 512)
        scores.append(match_segments(gt, pred, num_classes=27))
    tp, _, fn = np.sum(scores, axis=0)
    assert round(100 * tp.sum() / (tp + fn).sum(), 2) == float(acc[-1])
    # --show-dir: ground truth | matched prediction, drawn on the model's 512x512 input
    pictures = sorted(p.name for p in tmp_path.glob('drawn/vis_data/vis_image/*.png'))
    assert pictures == sorted(f'test_{osp.basename(s.img_path)}_{i}.png'
                              for i, s in enumerate(samples, 1))
    assert all(Image.open(p).size == (1024, 512) for p in tmp_path.glob('drawn/**/*.png'))


@pytest.mark.slow
def test_iseg_pseudo_masks_scored_on_voc_train_without_checkpoint(tmp_path, tiny_sd,
                                                                  monkeypatch):
    """iSeg's WSSS benchmark through tools/test.py: each image labelled from the classes of
    its scored label map (as released) at its own size (513x513 here), scored by IoUMetric;
    --out writes the masks."""
    monkeypatch.chdir(tmp_path)
    root = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'voc')
    labels = {name: sorted({DATASET_CLASSES['voc'][v] for v in np.unique(np.array(Image.open(
        root / 'SegmentationClassAug' / f'{name}.png'))) if 0 < v < 255}) for name in VOC_IMAGES}
    cfg = Config.fromfile(str(CONFIGS / 'iseg-sd21base_voc12-train-pseudo-masks.py'))
    # the tiny SD has fewer heads than SD 2.1-base: every cross head, self head 0; on the CPU
    # the noise is drawn by the CPU's generator (the config draws the release's, on CUDA)
    assert cfg.model.generator.noise_draw == 'cuda_float16'
    cfg.model.update(sd_model=str(tiny_sd), engine_dtype='float32',
                     generator=dict(type='ISeg', cross_heads=None, self_heads=[0],
                                    noise_draw='cpu'))
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.update(data_root=str(root), img_suffix='.png')
    cfg.val_dataloader = cfg.test_dataloader
    out = run_tool('test', write_config(cfg, tmp_path / 'iseg.py'), '--work-dir',
                   tmp_path / 'eval', '--out', tmp_path / 'masks')
    miou = re.findall(r'mIoU: ([0-9.]+)', out)
    assert miou and 0 < float(miou[-1]) <= 100
    for name in VOC_IMAGES:
        mask = np.array(Image.open(tmp_path / 'masks' / f'{name}.png'))
        assert mask.shape == (513, 513)
        found = {DATASET_CLASSES['voc'][v] for v in np.unique(mask)}
        assert found <= {'background', *labels[name]}, (name, found)


@pytest.mark.slow
def test_dist_test_runs_a_training_free_config_on_two_ranks(tmp_path, tiny_sd):
    """``bash tools/dist_test.sh CONFIG GPUS`` (no CHECKPOINT) on the CPU: DDP refuses a model
    without trainable parameters, so the DiffusionSegmentor's ranks are wrapped by mmengine's
    MMSeparateDistributedDataParallel; the scores are those of one process."""
    cfg = Config.fromfile(str(CONFIGS / 'diffseg-sd14_cocostuff27-unsupervised-512x512.py'))
    cfg.model.sd_model = str(tiny_sd)
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.data_root = str(coco_stuff_root(tmp_path / 'coco'))
    cfg.val_dataloader = cfg.test_dataloader
    config = write_config(cfg, tmp_path / 'diffseg.py')
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='',  # CPU ranks, also where one GPU would serve two ranks
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
    done = subprocess.run(['bash', str(REPO / 'tools' / 'dist_test.sh'), str(config), '2',
                           '--work-dir', str(tmp_path / 'ranks'), '--out', str(tmp_path / 'preds')],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scores = re.findall(r'ACC: ([0-9.]+)  mIoU: ([0-9.]+)', done.stdout + done.stderr)
    assert len(sorted((tmp_path / 'preds').glob('*.png'))) == 2
    one = run_tool('test', config, '--work-dir', tmp_path / 'one')
    assert scores and scores[-1] == re.findall(r'ACC: ([0-9.]+)  mIoU: ([0-9.]+)', one)[-1]


def dist_test_arguments(tmp_path, *argv):
    """What ``tools/dist_test.sh argv`` gives torchrun (a stand-in PYTHON that prints its
    arguments): exit status, ``--nproc_per_node``, test.py's arguments, stderr. The check that
    runs once before torchrun must have been given the same arguments."""
    stub = tmp_path / 'python'
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" ---\n')
    stub.chmod(0o755)
    done = subprocess.run(['bash', str(REPO / 'tools' / 'dist_test.sh'), *argv],
                          env=dict(os.environ, PYTHON=str(stub)), capture_output=True, text=True)
    calls = [call.split() for call in done.stdout.split('---') if call.strip()]
    if not calls:
        return done.returncode, None, [], done.stderr
    check, ranks = calls
    assert check[0].endswith('tools/test.py') and check[-1] == '--preflight-only'
    assert ranks[-1] == '--skip-preflight' and ranks[-len(check):-1] == check[:-1]
    nproc = next(a.split('=', 1)[1] for a in ranks if a.startswith('--nproc_per_node='))
    return done.returncode, nproc, check[1:-1], done.stderr


def test_dist_test_checkpoint_is_optional_as_in_test_py(tmp_path):
    """``dist_test.sh CONFIG GPUS`` (or CHECKPOINT given as "") for the training-free configs;
    ``CONFIG CHECKPOINT GPUS`` as before; a missing GPUS count is named."""
    launch = ['--launcher', 'pytorch']
    assert dist_test_arguments(tmp_path, 'c.py', '2') == (0, '2', ['c.py', *launch], '')
    assert dist_test_arguments(tmp_path, 'c.py', '2', '--out', 'o') == (
        0, '2', ['c.py', *launch, '--out', 'o'], '')
    assert dist_test_arguments(tmp_path, 'c.py', '', '2', '--out', 'o') == (
        0, '2', ['c.py', *launch, '--out', 'o'], '')
    assert dist_test_arguments(tmp_path, 'c.py', 'w.pth', '2', '--out', 'o') == (
        0, '2', ['c.py', 'w.pth', *launch, '--out', 'o'], '')
    (tmp_path / '3').write_text('')   # a checkpoint file named like a count is a checkpoint
    assert dist_test_arguments(tmp_path, 'c.py', str(tmp_path / '3'), '2')[2] == [
        'c.py', str(tmp_path / '3'), *launch]
    for argv in (['c.py', 'w.pth'], ['c.py', 'w.pth', '--out', 'o'], ['c.py']):
        status, nproc, _, err = dist_test_arguments(tmp_path, *argv)
        assert status == 2 and nproc is None and 'dist_test.sh CONFIG [CHECKPOINT] GPUS' in err


def test_training_free_ranks_are_wrapped_without_ddp():
    """torch's DDP refuses DiffusionSegmentor (no trainable parameter): under a launcher
    tools/test.py gives it MMSeparateDistributedDataParallel, which wraps none of it and tests
    through the segmentor's own test_step; a config's own wrapper and other models are kept."""
    from mmengine.registry import MODEL_WRAPPERS
    from mmdiffseg.models import DiffusionSegmentor
    test = load_tool('test')
    cfg = Config(dict(model=dict(type='DiffusionSegmentor')))
    test.wrap_training_free(cfg)
    segmentor = DiffusionSegmentor('tiny', dict(type='DiffSeg'))
    wrapped = MODEL_WRAPPERS.build(dict(cfg.model_wrapper_cfg, module=segmentor))
    assert wrapped.module is segmentor and not any(p.requires_grad for p in wrapped.parameters())
    for cfg in (Config(dict(model=dict(type='EncoderDecoder'))),
                Config(dict(model=dict(type='DiffusionSegmentor'), model_wrapper_cfg=dict(a=1)))):
        before = cfg.get('model_wrapper_cfg')
        test.wrap_training_free(cfg)
        assert cfg.get('model_wrapper_cfg') == before


def test_out_without_ground_truth_writes_predictions_only(tmp_path):
    """``--out DIR --cfg-options test_evaluator.format_only=True`` (test images without labels):
    HungarianMatchedIoU writes the predictions and scores nothing, as mmseg's IoUMetric does."""
    metric = HungarianMatchedIoU(output_dir=str(tmp_path / 'preds'), format_only=True)
    pred = torch.tensor([[[0, 3], [255, 3]]])
    metric.process({}, [dict(pred_sem_seg=dict(data=pred), img_path='a/b/x_leftImg8bit.png')])
    assert metric.compute_metrics(metric.results) == {}
    saved = np.array(Image.open(tmp_path / 'preds' / 'x_leftImg8bit.png'))
    assert saved.dtype == np.uint8 and saved.tolist() == [[0, 3], [255, 3]]
    with pytest.raises(ValueError, match='segment ids up to 511 do not fit'):
        metric.process({}, [dict(pred_sem_seg=dict(data=pred + 256), img_path='y.png')])


def test_test_refuses_what_it_cannot_evaluate(tmp_path, monkeypatch, capsys):
    """A model with weights needs CHECKPOINT (exit 2, before anything is built); a missing
    CHECKPOINT file is named as such; DiffusionSegmentor runs without one."""
    monkeypatch.chdir(tmp_path)
    test = load_tool('test')
    for argv, message in (([], 'CHECKPOINT is missing: EncoderDecoder needs trained weights'),
                          (['gone.pth'], 'CHECKPOINT gone.pth: file not found')):
        with pytest.raises(SystemExit) as exit_:
            test.main([str(TINY_FINETUNE), *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and 'load_from' not in err
    diffseg = str(CONFIGS / 'diffseg-sd14_cityscapes27-unsupervised-512x512.py')
    assert test.checkpoint_problem(Config.fromfile(diffseg), None) is None
    # a checkpoint (say, a trained Mask2Former's) has nothing to load into DiffusionSegmentor
    (tmp_path / 'm2f.pth').write_bytes(b'')
    with pytest.raises(SystemExit) as exit_:
        test.main([diffseg, str(tmp_path / 'm2f.pth')])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and 'DiffusionSegmentor is training-free, a checkpoint has ' \
        'nothing to load into it' in err and 'leave CHECKPOINT out' in err
    with pytest.raises(SystemExit) as exit_:
        test.main([diffseg, '--show-dir', 'drawn', '--show-interval', '0'])
    assert exit_.value.code == 2 and '--show-interval must be >= 1' in capsys.readouterr().err
