"""The offline tools through their command lines, on the tiny random-weights SD 2.1-base and the
VOC samples: outputs, resume after SIGKILL (byte-equal to an uninterrupted run), corrupt inputs,
early errors and the contact sheet (eval_labels: test_eval_labels_tool.py)."""
import io
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
from e2e_helpers import free_port
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
def test_pseudo_label_with_a_compiled_unet(pseudo_labels, tiny_model, voc_images, tmp_path,
                                          monkeypatch):
    """--compile BACKEND compiles the engine's U-Net with that backend (dynamo's tracing backend
    here: seconds); the labels are the eager run's but for float rounding of the maps (their
    row statistics come from the map path under compile)."""
    import torch
    backends, compile_ = [], torch.nn.Module.compile

    def spy(module, *args, **kwargs):
        backends.append((type(module).__name__, kwargs.get('backend')))
        return compile_(module, *args, **kwargs)
    monkeypatch.setattr(torch.nn.Module, 'compile', spy)
    reference, _ = pseudo_labels
    out = tmp_path / 'compiled'
    log = run_in_process('pseudo_label', *pseudo_label_args(tiny_model, voc_images, out),
                         '--workers', '0', '--compile', 'eager')
    torch._dynamo.reset()
    assert backends == [('UNet2DConditionModel', 'eager')]
    assert 'made 4, already done 0, failed 1' in log
    got, want = masks(out), masks(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        a, b = (np.array(Image.open(io.BytesIO(data))) for data in (got[name], want[name]))
        assert (a == b).mean() > 0.99, name


@pytest.mark.slow
def test_two_cpu_ranks_under_torchrun_share_the_work(tiny_model, voc_images, tmp_path):
    out = tmp_path / 'out'
    tool = tool_command('pseudo_label', *pseudo_label_args(tiny_model, voc_images, out),
                        '--launcher', 'pytorch')
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2',
               '--master-port', str(free_port()), *tool[1:]]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'made 4, already done 0, failed 1' in result.stdout + result.stderr
    check_complete(out)
    assert sorted(masks(out)) == [f'voc_val_{i}.png' for i in (0, 1, 20, 23)]
    assert [p.name for p in out.glob('manifest*')] == ['manifest.jsonl']  # rank files merged
    assert sorted(finished_ids(out)) == ['voc_val_0', 'voc_val_1', 'voc_val_20', 'voc_val_23']
    assert len((out / 'ImageSets/Segmentation/train.txt').read_text().split()) == 4


def test_bad_input_stops_before_any_work(tiny_model, voc_images, tmp_path):
    labels = tmp_path / 'labels.json'
    labels.write_text(json.dumps({f'voc_val_{i}': ['cat'] for i in (0, 1, 20)} |
                                 {'voc_val_23': ['sheeep'], 'broken': ['unicorn']}))
    out = tmp_path / 'out'
    result = run_tool('pseudo_label', voc_images, '--labels', labels, '--classes', 'voc',
                      '--model', tiny_model, '--out', out, expect=2)
    assert 'the image-level labels hold 2 unknown class name(s): ' in result.stderr  # all at once
    # (the message read "did you mean 'sheep'?. Fix:")
    assert "'sheeep' (1 image(s), e.g. 'voc_val_23') (did you mean 'sheep'?). Fix:" in \
        result.stderr
    assert "'unicorn' (1 image(s), e.g. 'broken')" in result.stderr
    assert "Fix: correct them (" in result.stderr and "'sheeep' -> 'sheep'" in result.stderr
    labels.write_text(json.dumps({f'voc_val_{i}.png': ['cat'] for i in (0, 1, 20, 23)} |
                                 {'broken.png': ['cat']}))
    err = run_in_process('pseudo_label', voc_images, '--labels', labels, '--classes', 'voc',
                         '--model', tiny_model, '--out', out, expect=2)
    assert "5 image(s) have no image-level labels" in err
    assert "keyed by file names (e.g. 'broken.png'): key them by the image name without its " \
        "extension ('broken')" in err
    err = run_in_process('pseudo_label', voc_images, '--labels-from-gt',
                         shared_path(*VOC, 'SegmentationClass'), '--classes', 'voc', '--model',
                         tiny_model, '--out', out, expect=2)
    assert "no ground truth for 1 image(s), e.g. ['broken']" in err
    assert 'Traceback' not in result.stderr
    err = run_in_process('synthesize', '--classes', 'cat,unicorn', '--label-set', 'voc',
                         '--model', tiny_model, '--out', out, expect=2)
    assert "--classes ['unicorn'] not in --label-set (the mask indices: ['background'," in err
    assert 'leave --label-set out for masks of background + the --classes' in err
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
