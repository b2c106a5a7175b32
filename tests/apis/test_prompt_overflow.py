"""An image whose class names do not fit in the text encoder's 77 prompt tokens (an iSeg prompt of
~30 ADE20K classes) is named and counted as failed by pseudo_label.py; the rest of its batch is
made, as it would be without it (tiny random-weights SD 2.1-base, VOC sample images)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))  # the tool tests' helpers
from test_offline_tools import masks, run_in_process, tiny_model, voc_images  # noqa: E402, F401
from test_resume_inputs import copy_images  # noqa: E402

from mmdiffseg.datasets.class_names import DATASET_CLASSES  # noqa: E402

ADE_OPTIONS = ['--config', 'configs/iseg/iseg_wsss_ade20k.py', '--cfg-options', 'cross_heads=None',
               'self_heads=[0]', 'cluster_iters=3', 'iters=3']
FEW = dict(voc_val_0=['sky', 'airplane'], voc_val_20=['grass', 'animal'])


def label(model, images, labels, out):
    path = out.parent / f'{out.name}_labels.json'
    path.write_text(json.dumps(labels))
    return run_in_process('pseudo_label', images, '--labels', path, '--classes', 'ade20k',
                          '--model', model, '--batch-size', '3', '--device', 'cpu', '--out', out,
                          *ADE_OPTIONS)


@pytest.mark.slow
def test_an_image_with_too_many_classes_fails_alone_and_the_job_goes_on(
        tiny_model, voc_images, tmp_path):
    labels = dict(FEW, voc_val_1=list(DATASET_CLASSES['ade20k'][:40]))
    out = tmp_path / 'out'
    log = label(tiny_model, copy_images(voc_images, tmp_path / 'all', sorted(labels)), labels,
                out)
    assert 'made 2, already done 0, failed 1' in log
    assert "failed: voc_val_1: class 'railing' lies beyond the first 77 tokens" in log
    split = (out / 'ImageSets/Segmentation/train.txt').read_text().split()
    assert split == ['voc_val_0', 'voc_val_20']
    # the batch's other images get the labels a run without the long list gives them
    alone = tmp_path / 'alone'
    label(tiny_model, copy_images(voc_images, tmp_path / 'few', sorted(FEW)), FEW, alone)
    assert masks(out) == masks(alone) and len(masks(out)) == 2
