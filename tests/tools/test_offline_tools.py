"""The offline tools through their command lines, on the tiny random-weights SD 2.1-base and the
VOC samples: outputs, resume after SIGKILL (byte-equal to an uninterrupted run), corrupt inputs,
early errors and the contact sheet (eval_labels: test_eval_labels_tool.py)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apis.unwritable import readonly_folder
from sample_data import REPO, shared_path

VOC = ('voc2012_val_samples',)
# tiny model: 1-4 heads per layer, so iSeg's SD 2.1 head lists do not apply; fewer PAMR steps
ISEG_OPTIONS = ['--cfg-options', 'cross_heads=None', 'self_heads=[0]', 'cluster_iters=3',
                'iters=3']
SEEDIFF_OPTIONS = ['--cfg-options', 'pamr_iter=3', 'steps=1']
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def tool_command(name, *args):
    return [sys.executable, str(REPO / 'tools' / f'{name}.py'), *map(str, args)]


def run_tool(name, *args, expect=0, cwd=REPO):
    result = subprocess.run(tool_command(name, *args), cwd=cwd, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == expect, (
        f'{name} exited {result.returncode}, expected {expect}\n{result.stdout[-3000:]}\n'
        f'{result.stderr[-3000:]}')
    return result


def run_in_process(name, *args, expect=0):
    """A tool's ``main`` with these arguments in this process (argument parsing and error
    handling as on the command line, without the start-up cost); returns what it printed
    (stdout, the log and stderr)."""
    import contextlib
    import io
    import logging

    from e2e_helpers import load_tool
    from mmdiffseg.apis import cli
    from mmengine.logging import MMLogger
    module = load_tool(name)
    out = io.StringIO()
    logger = MMLogger.get_current_instance()
    streams = [h for h in logger.handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    # the handlers' streams swapped, not set: setStream flushes the old one, which is closed
    # when it was a test's capsys capture (the logger was made during that test)
    previous = [h.stream for h in streams]
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        for handler in streams:
            handler.stream = out
        try:
            code = cli.run_cli(module.main, [str(a) for a in args])
        finally:
            for handler, stream in zip(streams, previous):
                handler.stream = stream
    assert code == expect, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """The tiny random-weights SD 2.1-base, saved once for this module's runs."""
    from mmdiffseg.attention.testing import build_tiny_pipeline_folder
    return build_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'),
                                      tmp_path_factory.mktemp('tiny_sd'))


@pytest.fixture(scope='module')
def voc_images(tmp_path_factory):
    """Four VOC sample images and one truncated (corrupt) image file."""
    src = shared_path(*VOC, 'JPEGImages')
    folder = tmp_path_factory.mktemp('samples') / 'images'
    folder.mkdir()
    for name in ('voc_val_0', 'voc_val_1', 'voc_val_20', 'voc_val_23'):
        (folder / f'{name}.png').write_bytes((src / f'{name}.png').read_bytes())
    (folder / 'broken.png').write_bytes((src / 'voc_val_60.png').read_bytes()[:300])
    return folder


# image-level labels of the samples (the classes in their ground truth)
IMAGE_LABELS = dict(voc_val_0=['aeroplane'], voc_val_1=['aeroplane'], voc_val_20=['sheep'],
                    voc_val_23=['sheep'], broken=['cat'])


def pseudo_label_args(model, images, out):
    labels = images.parent / 'labels.json'
    labels.write_text(json.dumps(IMAGE_LABELS))
    return [images, '--classes', 'voc', '--labels', labels, '--model', model, '--config',
            REPO / 'configs/iseg/iseg_wsss_voc.py', '--batch-size', '2', '--device', 'cpu', '--out',
            out, *ISEG_OPTIONS]


@pytest.fixture(scope='module')
def pseudo_labels(tiny_model, voc_images, tmp_path_factory):
    """An uninterrupted iSeg pseudo-label run (the reference for the resume test)."""
    out = tmp_path_factory.mktemp('pl') / 'out'
    result = run_tool('pseudo_label', *pseudo_label_args(tiny_model, voc_images, out))
    return out, result.stdout + result.stderr


def masks(folder):
    return {p.name: p.read_bytes() for p in sorted((folder / 'SegmentationClass').glob('*.png'))}


def check_complete(folder, temp_files_allowed=False):
    """Every image opens; no temp file is left (except right after a kill)."""
    if not temp_files_allowed:
        assert not [p for p in folder.rglob('*') if p.name.endswith('.tmp')]
    for path in list(folder.rglob('*.png')) + list(folder.rglob('*.jpg')):
        Image.open(path).load()


def finished_ids(folder):
    lines = (folder / 'manifest.jsonl').read_text().split('\n')[1:-1]  # complete lines only
    return {json.loads(line)['id'] for line in lines}


def kill_after_items(command, manifest, min_items, rng):
    """Start ``command``, wait for ``min_items`` manifest records, SIGKILL it a random moment
    later; returns the number of records then."""
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if manifest.is_file() and len(manifest.read_bytes().splitlines()) - 1 >= min_items:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return len(manifest.read_bytes().splitlines()) - 1 if manifest.is_file() else 0


@pytest.mark.slow
def test_pseudo_label_writes_labels_and_names_the_corrupt_image_as_failed(pseudo_labels,
                                                                         voc_images):
    out, log = pseudo_labels
    assert 'made 4, already done 0, failed 1' in log
    assert f'failed broken: cannot read image {voc_images / "broken.png"}: ' in log
    assert 'truncated' in log and '(not made; counted as failed)' in log
    assert sorted(masks(out)) == [f'voc_val_{i}.png' for i in (0, 1, 20, 23)]
    split = (out / 'ImageSets/Segmentation/train.txt').read_text().split()
    assert split == ['voc_val_0', 'voc_val_1', 'voc_val_20', 'voc_val_23']
    lines = [json.loads(line) for line in (out / 'manifest.jsonl').read_text().splitlines()]
    header, records = lines[0], {r['id']: r for r in lines[1:]}
    assert header['tool'] == 'pseudo_label' and header['generator']['type'] == 'ISeg'
    assert records['voc_val_20']['classes'] == ['sheep']
    # inputs are recorded relative to the folder: they resolve from any working directory
    assert (out / records['voc_val_20']['image']).samefile(voc_images / 'voc_val_20.png')
    for name in ('voc_val_0', 'voc_val_20'):
        label = Image.open(out / 'SegmentationClass' / f'{name}.png')
        assert label.mode == 'P' and label.getpalette()[3:6] == [128, 0, 0]  # VOC palette
        assert label.size == Image.open(voc_images / f'{name}.png').size
        allowed = {0, 255} | {header['classes'].index(c) for c in records[name]['classes']}
        assert set(np.unique(np.array(label)).tolist()) <= allowed


@pytest.mark.slow
def test_pseudo_label_resumes_after_sigkill_to_the_same_result(pseudo_labels, tiny_model,
                                                               voc_images, tmp_path):
    reference, _ = pseudo_labels
    out = tmp_path / 'out'
    # same command, so the same batches: float results depend on the batch composition
    command = tool_command('pseudo_label', *pseudo_label_args(tiny_model, voc_images, out))
    rng = random.Random(5)
    done = kill_after_items(command, out / 'manifest.jsonl', 1, rng)
    done = kill_after_items(command, out / 'manifest.jsonl', done + 1, rng)
    assert done >= 2
    check_complete(out, temp_files_allowed=True)
    done_ids = finished_ids(out)
    before = {i: (out / 'SegmentationClass' / f'{i}.png').stat().st_mtime_ns for i in done_ids}
    result = run_tool('pseudo_label', *command[2:])
    assert f'already done {len(done_ids)}' in result.stdout + result.stderr
    check_complete(out)
    assert masks(out) == masks(reference)
    after = {i: (out / 'SegmentationClass' / f'{i}.png').stat().st_mtime_ns for i in done_ids}
    assert after == before  # finished items are not redone


@pytest.mark.slow
def test_pseudo_label_output_does_not_depend_on_the_loader_workers(pseudo_labels, tiny_model,
                                                                    voc_images, tmp_path):
    """The reference ran with the default --workers (loader and writer processes); reading in
    the main process (0) or with one worker gives the same bytes, the corrupt image named and
    counted as failed whichever process read it."""
    reference, _ = pseudo_labels
    for workers in ('0', '1'):
        out = tmp_path / workers
        log = run_in_process('pseudo_label', *pseudo_label_args(tiny_model, voc_images, out),
                             '--workers', workers)
        assert 'made 4, already done 0, failed 1' in log and 'broken' in log
        assert masks(out) == masks(reference)
        assert (out / 'manifest.jsonl').read_bytes() == (reference / 'manifest.jsonl').read_bytes()
        split = 'ImageSets/Segmentation/train.txt'
        assert (out / split).read_bytes() == (reference / split).read_bytes()


@pytest.mark.slow
def test_two_cpu_ranks_under_torchrun_share_the_work(tiny_model, voc_images, tmp_path):
    out = tmp_path / 'out'
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2',
               *tool_command('pseudo_label', *pseudo_label_args(tiny_model, voc_images, out),
                             '--launcher', 'pytorch')[1:]]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'made 4, already done 0, failed 1' in result.stdout + result.stderr
    check_complete(out)
    assert sorted(masks(out)) == [f'voc_val_{i}.png' for i in (0, 1, 20, 23)]
    assert [p.name for p in out.glob('manifest*')] == ['manifest.jsonl']  # rank files merged
    assert sorted(finished_ids(out)) == ['voc_val_0', 'voc_val_1', 'voc_val_20', 'voc_val_23']
    assert len((out / 'ImageSets/Segmentation/train.txt').read_text().split()) == 4


@pytest.mark.slow
def test_synthesize_is_deterministic_and_resumes_after_sigkill(tiny_model, tmp_path):
    args = ['--classes', 'cat,dog', '--label-set', 'voc', '--images-per-class', '1', '--seed', '3',
            '--prompt', 'a photo of a {}', '--prompt', 'a picture of a {}', '--model', tiny_model,
            '--config', REPO / 'configs/seediff/seediff_voc20_synth.py', '--batch-size', '1',
            '--device', 'cpu', *SEEDIFF_OPTIONS]
    run_tool('synthesize', *args, '--out', tmp_path / 'a')
    command = tool_command('synthesize', *args, '--out', tmp_path / 'b')
    kill_after_items(command, tmp_path / 'b' / 'manifest.jsonl', 1, random.Random(1))
    result = run_tool('synthesize', *command[2:])
    assert 'failed 0' in result.stdout + result.stderr
    for name in ('a', 'b'):
        check_complete(tmp_path / name)
    files = sorted(p.relative_to(tmp_path / 'a') for p in (tmp_path / 'a').rglob('*.*g'))
    assert [str(f) for f in files] == ['JPEGImages/cat_00000.jpg', 'JPEGImages/dog_00000.jpg',
                                       'SegmentationClass/cat_00000.png',
                                       'SegmentationClass/dog_00000.png']
    for rel in files:
        assert (tmp_path / 'a' / rel).read_bytes() == (tmp_path / 'b' / rel).read_bytes(), rel
    lines = [json.loads(line) for line in (tmp_path / 'a/manifest.jsonl').read_text().splitlines()]
    assert lines[0]['seed'] == 3 and lines[0]['classes'][8] == 'cat'
    assert [r['prompt'] for r in lines[1:]] == ['a photo of a cat', 'a photo of a dog']
    assert len({r['seed'] for r in lines[1:]}) == 2
    label = np.array(Image.open(tmp_path / 'a/SegmentationClass/dog_00000.png'))
    assert label.shape == (512, 512) and set(np.unique(label)) <= {0, 12, 255}
    # a rerun of the finished command does nothing; other settings are refused
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / 'a').rglob('*.*g')}
    run_in_process('synthesize', *args, '--out', tmp_path / 'a')
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / 'a').rglob('*.*g')} == before
    args[args.index('--seed') + 1] = '4'
    err = run_in_process('synthesize', *args, '--out', tmp_path / 'a', expect=2)
    assert 'seed: folder has 3, this run has 4' in err


@pytest.mark.slow
def test_segment_writes_masks_overlays_and_contact_sheets(tiny_model, tmp_path, monkeypatch):
    image = shared_path(*VOC, 'JPEGImages', 'voc_val_1.png')
    out = tmp_path / 'seg'
    # the image given relative to where the run starts, as users do
    run_tool('segment', image.name, '--classes', 'aeroplane,person', '--model', tiny_model,
             '--out', out, '--thumb', '64', '--device', 'cpu', *ISEG_OPTIONS, cwd=image.parent)
    label = np.array(Image.open(out / 'SegmentationClass/voc_val_1.png'))
    rgb = np.array(Image.open(image).convert('RGB'))
    assert label.shape == rgb.shape[:2] and set(np.unique(label)) <= {0, 1, 2, 255}
    overlay = np.array(Image.open(out / 'Overlays/voc_val_1.jpg'))
    assert overlay.shape == rgb.shape
    assert np.abs(overlay.astype(int) - rgb).mean() > 5  # coloured, not the plain image
    assert Image.open(out / 'contact_sheet.jpg').size == (64, 64)

    # the sheet of that folder from another working directory; --out is a folder everywhere
    monkeypatch.chdir(tmp_path)
    run_in_process('segment', '--contact-sheet', out, '--thumb', '48', '--out', 'sheet')
    assert Image.open(tmp_path / 'sheet/contact_sheet.jpg').size == (48, 48)
    (out / 'contact_sheet.jpg').unlink()
    run_in_process('segment', '--contact-sheet', out, '--thumb', '40')  # into the folder itself
    assert Image.open(out / 'contact_sheet.jpg').size == (40, 40)
    err = run_in_process('segment', '--contact-sheet', out, '--out', 'sheet.jpg', expect=2)
    assert "--out is a folder (the sheet is written to <out>/contact_sheet.jpg)" in err

    # a sheet of a folder written by another tool: grid of min(cols, n) x rows tiles; an older
    # manifest's image paths (relative to where that run started) still resolve from there
    folder = tmp_path / 'fake'
    for i in range(5):
        gt = shared_path(*VOC, 'SegmentationClass', 'voc_val_20.png')
        (folder / 'SegmentationClass').mkdir(parents=True, exist_ok=True)
        (folder / 'SegmentationClass' / f'x{i}.png').write_bytes(gt.read_bytes())
    src = shared_path(*VOC, 'JPEGImages', 'voc_val_20.png')
    lines = [dict(tool='pseudo_label', classes=['background'] + ['c'] * 20)]
    lines += [dict(id=f'x{i}', image=str(src), files=[]) for i in range(5)]
    (folder / 'manifest.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
    run_in_process('segment', '--contact-sheet', folder, '--cols', '3', '--thumb', '50', '--out',
                   tmp_path / 'sheets')
    sheet = np.array(Image.open(tmp_path / 'sheets/contact_sheet.jpg')).astype(int)
    assert sheet.shape == (100, 150, 3)
    assert sheet[55:, 105:].max() < 30  # the sixth tile is empty
    plain = np.array(Image.open(src).convert('RGB').resize((50, 50), Image.BILINEAR)).astype(int)
    assert np.abs(sheet[15:50, 50:100] - plain[15:50]).mean() > 10  # an overlay, not the image


def test_bad_input_stops_before_any_work(tiny_model, voc_images, tmp_path):
    labels = tmp_path / 'labels.json'
    labels.write_text(json.dumps({f'voc_val_{i}': ['cat'] for i in (0, 1, 20, 23)} |
                                 {'broken': ['unicorn']}))
    out = tmp_path / 'out'
    result = run_tool('pseudo_label', voc_images, '--labels', labels, '--classes', 'voc',
                      '--model', tiny_model, '--out', out, expect=2)
    assert "unknown class name(s) ['unicorn'] in the labels of image broken" in result.stderr
    err = run_in_process('pseudo_label', voc_images, '--labels-from-gt',
                         shared_path(*VOC, 'SegmentationClass'), '--classes', 'voc', '--model',
                         tiny_model, '--out', out, expect=2)
    assert "no ground truth for 1 image(s), e.g. ['broken']" in err
    assert 'Traceback' not in result.stderr
    err = run_in_process('synthesize', '--classes', 'cat,unicorn', '--label-set', 'voc',
                         '--model', tiny_model, '--out', out, expect=2)
    assert "unknown class name(s) ['unicorn']" in err
    err = run_in_process('segment', voc_images, '--classes', 'cat,', '--model',
                         tmp_path / 'no_such_model', '--out', out, expect=2)
    assert 'no_such_model' in err and 'model_index.json' in err
    # a misspelt class set is refused, not taken as a class named "vocc"
    err = run_in_process('synthesize', '--classes', 'vocc', '--model', tiny_model, '--out', out,
                         expect=2)
    assert "--classes 'vocc' is not a class set; did you mean 'voc'?" in err
    assert not out.exists()


def test_a_missing_relative_model_path_is_reported_as_such(voc_images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'models').mkdir()
    err = run_in_process('segment', voc_images, '--classes', 'cat,', '--model', 'models/sd21',
                         '--out', tmp_path / 'out', expect=2)
    assert "model 'models/sd21' not found" in err and 'model_index.json' in err
    assert str(tmp_path / 'models' / 'sd21') in err
    # no such folder here: it may be meant as a hub id (unreachable offline); one clear message
    # saying each thing once, and the --out folder the run made is gone again
    import huggingface_hub.constants
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    err = run_in_process('segment', voc_images, '--classes', 'cat,', '--model', 'hub/sd21',
                         '--out', tmp_path / 'out' / 'seg', expect=2)
    message = err[err.index('error: '):]
    assert message.startswith("error: cannot load Stable Diffusion model 'hub/sd21': it is not a "
                              f"folder here ({tmp_path / 'hub' / 'sd21'} does not exist), not in "
                              'the local Hugging Face cache (')
    assert ('and the Hub was not asked (offline mode: HF_HUB_OFFLINE is set). Fix: unset '
            'HF_HUB_OFFLINE to download it, or pass a local diffusers folder (`hf download '
            'hub/sd21 --local-dir FOLDER`') in message
    for once in ("'hub/sd21'", 'cannot load', 'not a folder', 'Hugging Face cache',
                 'HF_HUB_OFFLINE is set'):
        assert message.count(once) == 1, once
    assert 'stacktrace' not in message and 'stack trace' not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ['models']


def test_readonly_output_is_reported(tiny_model, voc_images, tmp_path):
    with readonly_folder(tmp_path / 'ro') as folder:
        err = run_in_process('pseudo_label', *pseudo_label_args(tiny_model, voc_images,
                                                                folder / 'out'), expect=3)
    assert f'cannot write {folder}/out' in err
    assert 'read-only' in err or 'permission denied' in err


def test_synthesize_scales_seediff_grids_with_the_size(tiny_model, tmp_path):
    """--size 256: SeeDiff reads the 8/16/32 grids (a quarter, a half and all of the 32 latent)
    of the same layers and writes 256 px pairs; a size that is no multiple of 32, or grids fixed
    by hand that the size lacks, are refused before any work."""
    out = tmp_path / 'out'
    run_in_process('synthesize', '--classes', 'cat,', '--model', tiny_model, '--size', '256',
                   '--device', 'cpu', '--out', out, *SEEDIFF_OPTIONS)
    image = np.array(Image.open(out / 'JPEGImages/cat_00000.jpg'))
    label = np.array(Image.open(out / 'SegmentationClass/cat_00000.png'))
    assert image.shape == (256, 256, 3) and label.shape == (256, 256)
    header = json.loads((out / 'manifest.jsonl').read_text().splitlines()[0])
    assert header['size'] == 256
    layers = header['generator']['self_layers']  # the released layers, at this size's grids
    assert layers == {'8': 'up_blocks.1.attentions.0.transformer_blocks.0.attn1',
                      '16': 'up_blocks.2.attentions.0.transformer_blocks.0.attn1',
                      '32': 'up_blocks.3.attentions.0.transformer_blocks.0.attn1'}
    err = run_in_process('synthesize', '--classes', 'cat,', '--model', tiny_model, '--size', '500',
                         '--device', 'cpu', '--out', tmp_path / 'b', expect=2)
    assert '--size 500: SeeDiff reads' in err and 'must be a multiple of 32' in err
    err = run_in_process('synthesize', '--classes', 'cat,', '--model', tiny_model, '--size', '768',
                         '--device', 'cpu', '--out', tmp_path / 'b', '--cfg-options',
                         'resolutions=[16,32,64]', expect=2)
    assert ('image size 768 cannot be used: the capture spec reads attention at 16/32/64 token '
            'grids, which this model has at image size(s) [512] only') in err
    assert not (tmp_path / 'b' / 'manifest.jsonl').exists()


@pytest.mark.slow
def test_same_model_in_another_folder_resumes_and_strict_counts_failures(
        pseudo_labels, tiny_model, voc_images, tmp_path):
    """Manifests name the model by its id, so the same model copied elsewhere (another node's
    path) resumes the folder; --strict turns the failed (corrupt) image into exit status 4."""
    import shutil
    out, _ = pseudo_labels
    moved = shutil.copytree(tiny_model, tmp_path / 'elsewhere' / Path(tiny_model).name)
    log = run_in_process('pseudo_label', *pseudo_label_args(moved, voc_images, out)[:-5],
                         '--strict', *ISEG_OPTIONS, expect=4)
    assert 'made 0, already done 4, failed 1' in log
    assert 'error: 1 item(s) failed (--strict)' in log
