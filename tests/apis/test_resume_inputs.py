"""Resuming checks what each finished item was made from (the tools on the tiny random-weights
SD 2.1-base and the VOC samples): a corrected label list or another image under the same name is
redone, touched files are not, older folders resume unchecked; inputs that would share outputs,
an --out that is a file and segment's --out over its inputs are refused before any work."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from mmdiffseg.attention.engine import DiffusionAttentionEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))  # the tool tests' helpers
from test_offline_tools import (ISEG_OPTIONS, masks, run_in_process,  # noqa: E402, F401
                                tiny_model, voc_images)  # the last two: fixtures
LABELS = dict(voc_val_0=['aeroplane'], voc_val_1=['aeroplane'], voc_val_20=['sheep'],
              voc_val_23=['sheep'])


def copy_images(voc_images, folder, names=LABELS):
    """The samples ``names`` in a folder of their own (times kept, as a copy with ``cp -p``)."""
    folder.mkdir()
    for name in names:
        shutil.copy2(voc_images / f'{name}.png', folder / f'{name}.png')
    return folder


def pseudo_label(model, images, labels, out):
    path = out.parent / f'{out.name}_labels.json'
    path.write_text(json.dumps(labels))
    return run_in_process('pseudo_label', images, '--labels', path, '--classes', 'voc',
                          '--model', model, '--batch-size', '2', '--device', 'cpu', '--out', out,
                          *ISEG_OPTIONS)


def records(folder):
    lines = [json.loads(line) for line in (folder / 'manifest.jsonl').read_text().splitlines()]
    return {r['id']: r for r in lines[1:]}  # the last record of an item counts


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in (folder / 'SegmentationClass').iterdir()}


@pytest.mark.slow
def test_pseudo_label_redoes_the_items_whose_labels_or_image_changed(tiny_model, voc_images,
                                                                      tmp_path, monkeypatch):
    images, out = copy_images(voc_images, tmp_path / 'images'), tmp_path / 'out'
    log = pseudo_label(tiny_model, images, LABELS, out)
    assert 'made 4, already done 0, failed 0' in log and 'redone' not in log

    # a corrected label list and another image under an existing name
    labels = dict(LABELS, voc_val_0=['person'])
    shutil.copyfile(voc_images / 'voc_val_23.png', images / 'voc_val_20.png')
    before = mtimes(out)
    log = pseudo_label(tiny_model, images, labels, out)
    assert 'made 2, already done 2, failed 0' in log
    assert 'redone 2 (inputs changed)' in log
    after = mtimes(out)
    assert [n for n in before if after[n] != before[n]] == ['voc_val_0.png', 'voc_val_20.png']
    assert records(out)['voc_val_0']['classes'] == ['person']
    # the folder now equals a fresh run on the new inputs
    fresh = tmp_path / 'fresh'
    pseudo_label(tiny_model, images, labels, fresh)
    assert masks(out) == masks(fresh)
    assert records(out) == records(fresh)

    # the same files touched (copied without their times): checked by content, nothing redone,
    # and with nothing to do the model is not even loaded
    for path in images.iterdir():
        os.utime(path, ns=(1, 1))
    monkeypatch.setattr(DiffusionAttentionEngine, 'from_pretrained',
                        classmethod(lambda *args, **kwargs: pytest.fail('the model was loaded')))
    log = pseudo_label(tiny_model, images, labels, out)
    assert 'made 0, already done 4, failed 0' in log and 'redone' not in log
    assert mtimes(out) == after


@pytest.mark.slow
def test_segment_redoes_another_image_under_the_same_name_and_resumes_older_folders(
        tiny_model, voc_images, tmp_path):
    images, out = copy_images(voc_images, tmp_path / 'images', ['voc_val_0', 'voc_val_1']), \
        tmp_path / 'out'
    args = [images, '--classes', 'aeroplane,', '--model', tiny_model, '--batch-size', '1',
            '--device', 'cpu', '--thumb', '32', '--out', out, *ISEG_OPTIONS]
    run_in_process('segment', *args)
    overlay = (out / 'Overlays/voc_val_1.jpg').read_bytes()
    shutil.copyfile(voc_images / 'voc_val_20.png', images / 'voc_val_1.png')
    log = run_in_process('segment', *args)
    assert 'made 1, already done 1, failed 0' in log
    assert 'redone 1 (inputs changed)' in log
    assert (out / 'Overlays/voc_val_1.jpg').read_bytes() != overlay  # drawn on the new image

    # a folder written before sources were fingerprinted resumes as it is, said so
    manifest = out / 'manifest.jsonl'
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text(''.join(json.dumps({k: v for k, v in line.items() if k != 'source'}) +
                                '\n' for line in lines))
    shutil.copyfile(voc_images / 'voc_val_23.png', images / 'voc_val_1.png')
    log = run_in_process('segment', *args)
    assert 'made 0, already done 2, failed 0' in log
    assert ('2 of the already-done items not checked for changed inputs (made by an older version)' in log)


def test_folders_that_would_lose_or_reuse_outputs_are_refused_before_any_work(
        tiny_model, voc_images, tmp_path):
    model = ['--model', tiny_model, '--device', 'cpu']
    segment = ['--classes', 'cat,', *model, *ISEG_OPTIONS]
    unlabelled = ['--method', 'diffseg', *model]
    # two inputs with one stem: one output would be lost
    images = copy_images(voc_images, tmp_path / 'dup', ['voc_val_0'])
    shutil.copyfile(voc_images / 'voc_val_1.png', images / 'voc_val_0.jpg')
    out = tmp_path / 'out'
    for tool, args in (('segment', segment), ('pseudo_label', unlabelled)):
        err = run_in_process(tool, images, '--out', out, *args, expect=2)
        assert (f"two inputs have the id 'voc_val_0', so their outputs would overwrite each "
                f"other: {images / 'voc_val_0.jpg'} and {images / 'voc_val_0.png'}") in err
        assert 'rename or move one of them' in err
    err = run_in_process('synthesize', '--classes', 'tv monitor,TV-monitor', '--out', out,
                         *model, expect=2)
    assert "'tv monitor' and 'TV-monitor' would both be written as tv-monitor_*" in err
    assert not out.exists()

    # --out an existing file (or below one)
    images = copy_images(voc_images, tmp_path / 'images', ['voc_val_0'])
    (tmp_path / 'file').write_text('')
    err = run_in_process('segment', images, '--out', tmp_path / 'file', *segment, expect=2)
    assert f'--out {tmp_path / "file"} is a file; --out must be a folder' in err
    err = run_in_process('pseudo_label', images, '--out', tmp_path / 'file' / 'sub', *unlabelled,
                         expect=2)
    assert f'--out {tmp_path / "file" / "sub"}: {tmp_path / "file"} is a file' in err

    # segment's --out over its inputs: its contact sheet and overlays would become inputs
    overlays = images / 'Overlays'
    overlays.mkdir()
    shutil.copyfile(images / 'voc_val_0.png', overlays / 'voc_val_0.png')
    for source in (images, overlays):
        err = run_in_process('segment', source, '--out', images, *segment, expect=2)
        assert (f'the input images in {source} lie in a folder this run writes (--out '
                f'{images}): it would overwrite them (label PNGs), or a rerun take its outputs '
                f'(contact_sheet.jpg, overlays) as inputs') in err
        assert f'--out {source.resolve()}_segments' in err
    assert sorted(p.name for p in images.iterdir()) == ['Overlays', 'voc_val_0.png']
    # pseudo_label's: its label PNGs taken as images would be overwritten by their own labels
    masks = images / 'SegmentationClass'
    masks.mkdir()
    shutil.copyfile(images / 'voc_val_0.png', masks / 'voc_val_0.png')
    err = run_in_process('pseudo_label', masks, '--out', images, *unlabelled, expect=2)
    assert f'the input images in {masks} lie in a folder this run writes' in err
    assert f'--out {masks.resolve()}_labels' in err
    assert (masks / 'voc_val_0.png').read_bytes() == (images / 'voc_val_0.png').read_bytes()

    # another tool's folder: said so, without listing the settings that differ with it
    labels = tmp_path / 'labels'
    labels.mkdir()
    (labels / 'manifest.jsonl').write_text(json.dumps(dict(
        manifest='mmdiffseg', version=1, tool='pseudo_label', classes=['background', 'cat'],
        dtype='float16')) + '\n')
    err = run_in_process('segment', images, '--out', labels, *segment, expect=2)
    assert (f'error: --out {labels} was made by pseudo_label.py, not segment.py: choose another '
            '--out (or rerun pseudo_label.py to resume it)\n') in err
    assert 'dtype' not in err and 'folder has' not in err
