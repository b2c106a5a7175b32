"""The synthesize and segment tools through their command lines, on the tiny random-weights SD
2.1-base: deterministic, resumable synthetic pairs, SeeDiff's grids at other sizes, and labelled
images with overlays and contact sheets (pseudo_label: test_offline_tools.py)."""
import json
import random

import numpy as np
import pytest
from PIL import Image

from sample_data import REPO, shared_path

from mmdiffseg.apis.visualize import LEGEND_WIDTH
from test_offline_tools import (ISEG_OPTIONS, SEEDIFF_OPTIONS, VOC,  # noqa: F401 (a fixture)
                                check_complete, kill_after_items, run_in_process, run_tool,
                                tiny_model, tool_command)


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
    width, height = Image.open(out / 'contact_sheet.jpg').size  # the grid, a legend below
    assert width == LEGEND_WIDTH and 64 + 22 <= height <= 64 + 40

    # the sheet of that folder from another working directory; --out is a folder everywhere
    monkeypatch.chdir(tmp_path)
    run_in_process('segment', '--contact-sheet', out, '--thumb', '48', '--out', 'sheet')
    assert Image.open(tmp_path / 'sheet/contact_sheet.jpg').size[1] > 48
    (out / 'contact_sheet.jpg').unlink()
    run_in_process('segment', '--contact-sheet', out, '--thumb', '40', '--no-legend')  # in FOLDER
    assert Image.open(out / 'contact_sheet.jpg').size == (40, 40)
    # a rerun with nothing left to make draws the sheet anew, with its own options
    run_tool('segment', image.name, '--classes', 'aeroplane,person', '--model', tiny_model,
             '--out', out, '--thumb', '32', '--no-legend', '--device', 'cpu', *ISEG_OPTIONS,
             cwd=image.parent)
    assert Image.open(out / 'contact_sheet.jpg').size == (32, 32)
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
    assert sheet.shape[1:] == (LEGEND_WIDTH, 3) and (sheet[:100, 160:] < 30).all()
    sheet = sheet[:100, :150]  # the grid, above the legend
    assert sheet[55:, 105:].max() < 30  # the sixth tile is empty
    plain = np.array(Image.open(src).convert('RGB').resize((50, 50), Image.BILINEAR)).astype(int)
    assert np.abs(sheet[15:50, 50:100] - plain[15:50]).mean() > 10  # an overlay, not the image


def test_segment_with_every_item_failed_exits_as_documented_without_a_sheet(tiny_model,
                                                                            tmp_path):
    """Items that fail are counted (exit 0, or 4 with --strict), not bad input (2): when none
    finished, the contact sheet is skipped with a note rather than refused."""
    folder = tmp_path / 'bad'
    folder.mkdir()
    image = shared_path(*VOC, 'JPEGImages', 'voc_val_1.png')
    (folder / 'a.png').write_bytes(image.read_bytes()[:2000])  # truncated
    args = [folder, '--classes', 'aeroplane,', '--model', tiny_model, '--workers', '0',
            '--device', 'cpu', '--out', tmp_path / 'seg', *ISEG_OPTIONS]
    log = run_in_process('segment', *args)
    assert 'failed 1' in log and 'contact sheet: not drawn, no item finished' in log
    assert not (tmp_path / 'seg' / 'contact_sheet.jpg').exists()
    log = run_in_process('segment', *args, '--strict', expect=4)
    assert 'error: 1 item(s) failed (--strict)' in log and 'no finished items' not in log


def test_synthesize_scales_seediff_grids_with_the_size(tiny_model, tmp_path):
    """--size 256: SeeDiff reads the 8/16/32 grids (a quarter, a half and all of the 32 latent)
    of the same layers and writes 256 px pairs; a size that is no multiple of 64, or grids fixed
    by hand that the size lacks, are refused before any work."""
    out = tmp_path / 'out'
    run_in_process('synthesize', '--classes', 'cat,', '--model', tiny_model, '--size', '256',
                   '--device', 'cpu', '--out', out, *SEEDIFF_OPTIONS)
    image = np.array(Image.open(out / 'JPEGImages/cat_00000.jpg'))
    label = np.array(Image.open(out / 'SegmentationClass/cat_00000.png'))
    assert image.shape == (256, 256, 3) and label.shape == (256, 256)
    header = json.loads((out / 'manifest.jsonl').read_text().splitlines()[0])
    assert header['size'] == 256 and header['sampler']['_class_name'] == 'PNDMScheduler'
    layers = header['generator']['self_layers']  # the released layers, at this size's grids
    assert layers == {'8': 'up_blocks.1.attentions.0.transformer_blocks.0.attn1',
                      '16': 'up_blocks.2.attentions.0.transformer_blocks.0.attn1',
                      '32': 'up_blocks.3.attentions.0.transformer_blocks.0.attn1'}
    err = run_in_process('synthesize', '--classes', 'cat,', '--model', tiny_model, '--size', '544',
                         '--device', 'cpu', '--out', tmp_path / 'b', expect=2)
    assert '--size 544: SeeDiff reads' in err and 'must be a multiple of 64' in err
    err = run_in_process('synthesize', '--classes', 'cat,', '--model', tiny_model, '--size', '768',
                         '--device', 'cpu', '--out', tmp_path / 'b', '--cfg-options',
                         'resolutions=[16,32,64]', expect=2)
    assert ('image size 768 cannot be used: the capture spec reads attention at 16/32/64 token '
            'grids, which this model has at image size(s) [512] only') in err
    # a 768 px model: the generators can read its own grids (the refusal named 512 alone)
    assert ('or read the grids 768 has (12/24/48/96: e.g. DiffSeg(resolutions=..., '
            'cross_resolutions=...), SeeDiff(resolutions=resolutions_for(96)); iSeg reads fixed '
            'layers)') in err
    assert not (tmp_path / 'b' / 'manifest.jsonl').exists()


def test_synthesize_seeds_images_by_index_as_released_on_request(tiny_model, tmp_path):
    """--seed-per-image index: image k of each class starts from seed --seed + k (SeeDiff's
    release: 200000 + k); the header records the rule, so a rerun under the default is refused
    rather than mixing two seed rules in one folder."""
    out = tmp_path / 'out'
    args = ['--classes', 'cat,', '--images-per-class', '2', '--model', tiny_model, '--size', '256',
            '--device', 'cpu', '--out', out, '--seed', '200000', *SEEDIFF_OPTIONS]
    run_in_process('synthesize', *args, '--seed-per-image', 'index')
    header, *records = [json.loads(line) for line in
                        (out / 'manifest.jsonl').read_text().splitlines()]
    assert header['seed'] == 200000 and header['seed_per_image'] == 'index'
    seeds = sorted((r['id'], r['seed']) for r in records)
    assert seeds == [('cat_00000', 200000), ('cat_00001', 200001)]
    err = run_in_process('synthesize', *args, expect=2)
    assert 'seed_per_image: folder has "index", this run has <absent>' in err


def test_synthesize_refuses_sizes_below_64_and_seeds_past_torchs(tiny_model, tmp_path):
    """Before any work (exit 2, nothing written): --size 0 or below names --size, not the
    SeeDiff grids it would make; with --seed-per-image index the last image's seed (--seed +
    images per class - 1) must be one torch takes, 2**64 - 1 at most (which is made)."""
    args = ['--classes', 'cat,', '--model', tiny_model, '--device', 'cpu', *SEEDIFF_OPTIONS]
    for size in ('0', '-64'):
        err = run_in_process('synthesize', *args, '--size', size, '--out', tmp_path / 'b',
                             expect=2)
        assert f'--size {size}: SeeDiff reads' in err and 'a multiple of 64 and at least 64' in err
    index = [*args, '--size', '256', '--images-per-class', '2', '--seed-per-image', 'index']
    err = run_in_process('synthesize', *index, '--seed', str(2 ** 64 - 1), '--out',
                         tmp_path / 'b', expect=2)
    assert (f'--seed {2 ** 64 - 1}: with --seed-per-image index the images of a class are '
            f'seeded {2 ** 64 - 1} to {2 ** 64}, and torch takes seeds from {-2 ** 63} to '
            f'{2 ** 64 - 1}; pass a --seed from {-2 ** 63} to {2 ** 64 - 2}') in err
    assert not (tmp_path / 'b').exists()
    run_in_process('synthesize', *index, '--seed', str(2 ** 64 - 2), '--out', tmp_path / 'out')
    records = (tmp_path / 'out' / 'manifest.jsonl').read_text().splitlines()[1:]
    assert sorted(json.loads(r)['seed'] for r in records) == [2 ** 64 - 2, 2 ** 64 - 1]
