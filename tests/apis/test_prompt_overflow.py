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
    assert ("1 image(s) have prompts longer than the 77 tokens the text encoder reads (e.g. "
            "voc_val_1: ") in log and '1 of them lose a class and fail' in log
    assert 'made 2, already done 0, failed 1' in log
    assert "failed: voc_val_1: class 'railing' lies beyond the first 77 tokens" in log
    split = (out / 'ImageSets/Segmentation/train.txt').read_text().split()
    assert split == ['voc_val_0', 'voc_val_20']
    # the batch's other images get the labels a run without the long list gives them
    alone = tmp_path / 'alone'
    label(tiny_model, copy_images(voc_images, tmp_path / 'few', sorted(FEW)), FEW, alone)
    assert masks(out) == masks(alone) and len(masks(out)) == 2


def test_prompts_cut_past_77_tokens_are_counted_before_the_work(sd_config_dir, monkeypatch):
    """35 ADE20K classes fit, but the template's end ('and other object and background') is
    cut: said before any work, with how many images lose a class (40 classes: 'railing')."""
    import importlib
    import logging

    from transformers import CLIPTokenizer

    from mmdiffseg.apis.pseudo_label import _warn_long_prompts
    from mmdiffseg.generators import ISeg
    from mmdiffseg.models.online_labeler import long_prompts
    tokenizer = CLIPTokenizer.from_pretrained(
        sd_config_dir('stable-diffusion-2-1-base') / 'tokenizer')
    generator = ISeg.from_preset('wsss_ade20k', cross_heads=None, self_heads=None)
    ade = list(DATASET_CLASSES['ade20k'])
    names = dict(a=ade[:3], b=ade[:35], c=ade[:40])
    long = dict(long_prompts(tokenizer, generator, names))
    assert sorted(long) == ['b', 'c'] and all(count > 77 for count in long.values())
    prompt = generator.extract_kwargs([ade[:35]])['prompts'][0]
    assert 'background' not in tokenizer.decode(tokenizer(prompt.lower(), truncation=True,
                                                          max_length=77).input_ids)
    api = importlib.import_module('mmdiffseg.apis.pseudo_label')
    logged = []
    monkeypatch.setattr(api, 'print_log', lambda msg, **kw: logged.append((msg, kw['level'])))
    _warn_long_prompts(tokenizer, generator, names)
    _warn_long_prompts(None, generator, names)      # no tokenizer here: nothing said
    _warn_long_prompts(tokenizer, generator, dict(a=ade[:3]))
    said = [msg for msg, level in logged if level == logging.WARNING]
    assert len(said) == len(logged) == 1 and said[0].startswith('2 image(s) have prompts longer')
    assert '1 of them lose a class and fail' in said[0]


def test_images_whose_labels_list_no_class_are_named_before_the_work(tmp_path, monkeypatch):
    """An empty class list (a tagger that found nothing) labels background everywhere, or 255
    without a background class: named before the work, not silently all background."""
    import importlib
    import logging

    from PIL import Image
    api = importlib.import_module('mmdiffseg.apis.pseudo_label')
    logged, jobs = [], []
    monkeypatch.setattr(api, 'print_log', lambda msg, **kw: logged.append((msg, kw.get('level'))))
    monkeypatch.setattr(api, 'run_job', lambda items, *args, **kwargs: jobs.append(items))
    for name in ('a', 'b'):
        Image.new('RGB', (8, 8)).save(tmp_path / f'{name}.png')
    gen = dict(type='ISeg', cross_heads=None, self_heads=None)
    api.pseudo_label(tmp_path, tmp_path / 'o1', 'org/not-here', gen, ['background', 'cat'],
                     dict(a=[], b=['cat']))
    api.pseudo_label(tmp_path, tmp_path / 'o2', 'org/not-here', dict(gen, vocabulary=None),
                     ['cat', 'dog'], dict(a=[], b=[]))
    warned = [msg for msg, level in logged if level == logging.WARNING]
    assert warned == [
        "1 image(s) have image-level labels without any class (e.g. a): their labels will be "
        'background everywhere; list their classes, or leave them out',
        '2 image(s) have image-level labels without any class (e.g. a, b): their labels will be '
        'unsure (255) everywhere; list their classes, or leave them out']
    assert len(jobs) == 2
