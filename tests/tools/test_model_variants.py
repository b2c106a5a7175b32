"""A model folder holding only variant weights (``*.fp16.safetensors``, what a hub download with
``variant='fp16'`` leaves): the tools refuse it before loading and name ``--variant``, load it
with ``--variant fp16``, and record the variant in the folder's header, so a run loading other
weights does not resume the folder."""
import json
import shutil

import pytest

from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
from sample_data import shared_path
from test_offline_tools import ISEG_OPTIONS, VOC, run_in_process


def fp16_only_copy(source, folder):
    shutil.copytree(source, folder)
    for weights in folder.glob('*/*.safetensors'):
        weights.rename(weights.with_name(weights.stem + '.fp16.safetensors'))
    return folder


@pytest.mark.slow
def test_the_tools_load_variant_weights_with_variant(tmp_path, sd_config_dir):
    plain = cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-2-1-base'))
    model = fp16_only_copy(plain, tmp_path / 'sd21-fp16')
    images = tmp_path / 'images'
    images.mkdir()
    shutil.copy(shared_path(*VOC, 'JPEGImages', 'voc_val_1.png'), images)
    out = tmp_path / 'out'
    args = [images, '--classes', 'aeroplane,person', '--model', model, '--device', 'cpu',
            '--out', out, *ISEG_OPTIONS]

    err = run_in_process('segment', *args, expect=2)
    assert "hold only fp16-variant weights" in err and '(tools: --variant fp16;' in err
    err = run_in_process('segment', *args, '--variant', 'bf16', expect=2)
    assert "has no weights of variant 'bf16'" in err
    assert not out.exists()  # refused before anything is written

    log = run_in_process('segment', *args, '--variant', 'fp16')
    assert 'made 1, already done 0, failed 0' in log
    header = json.loads((out / 'manifest.jsonl').read_text().splitlines()[0])
    assert header['variant'] == 'fp16'
    assert (out / 'SegmentationClass' / 'voc_val_1.png').is_file()

    # the plain weights beside the variant's: the same model, loaded without the variant now
    for weights in model.glob('*/*.fp16.safetensors'):
        shutil.copy(weights, weights.with_name(weights.name.replace('.fp16', '')))
    err = run_in_process('segment', *args, expect=2)
    assert 'variant: folder has "fp16", this run has <absent>' in err
    log = run_in_process('segment', *args, '--variant', 'fp16')
    assert 'made 0, already done 1, failed 0' in log
