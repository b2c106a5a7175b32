"""A label cache's signature stays with its labels: a folder deleted while a run writes into it is
signed again by that run's next label, and labels without a signature are never taken over."""
import json
import shutil

import numpy as np
import pytest

import mmdiffseg  # noqa: F401
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.datasets import LabelCache
from mmdiffseg.generators.base import MaskGenerator
from mmdiffseg.registry import MASK_GENERATORS


@MASK_GENERATORS.register_module(force=True)
class SignatureTestGenerator(MaskGenerator):
    method = 'signature-test'

    def __init__(self, iters=10):
        super().__init__()
        self.iters = iters

    def config_dict(self):
        return dict(method=self.method, iters=self.iters)


def cache_of(tmp_path, iters=10):
    return LabelCache(cache_dir=str(tmp_path / 'cache'), model='some/model',
                      generator=dict(type='SignatureTestGenerator', iters=iters))


KEYS = ['ab' + '0' * 38, 'cd' + '1' * 38]
LABEL = np.zeros((3, 4), np.uint8)


def test_a_cache_deleted_during_a_run_is_signed_again_by_its_next_label(tmp_path):
    """The run's labels after the deletion carry its settings, so a run with other settings is
    refused instead of reading them as its own."""
    run = cache_of(tmp_path, iters=10)
    run.save(KEYS[0], LABEL)
    shutil.rmtree(tmp_path / 'cache')
    run.save(KEYS[1], LABEL)
    stored = json.loads((tmp_path / 'cache' / 'cache.json').read_text())
    assert stored['generator']['iters'] == 10
    with pytest.raises(UserInputError, match=r'generator.iters: cache 10, this run 3'):
        cache_of(tmp_path, iters=3).load(KEYS[1])


def test_a_run_whose_cache_was_signed_anew_by_another_run_is_refused(tmp_path):
    """The folder deleted, then signed by a run of other settings: the first run went on adding
    its labels to it (it checked only that a signature was there), mixing two settings' labels
    under one signature; its next label is refused, as a new run of its settings would be."""
    first = cache_of(tmp_path, iters=10)
    first.save(KEYS[0], LABEL)
    shutil.rmtree(tmp_path / 'cache')
    cache_of(tmp_path, iters=3).save(KEYS[1], LABEL)
    with pytest.raises(UserInputError, match=r'generator.iters: cache 3, this run 10'):
        first.save(KEYS[0], LABEL)
    assert not (tmp_path / 'cache' / KEYS[0][:2]).exists()


def test_a_precision_resigned_cache_read_first_is_still_refused_at_the_next_save(tmp_path):
    """A float32 run's cache deleted and signed by a float16 run: the first run reads from it
    (a training step's lookup, not a writer's check), then saves; the read must not mark the
    folder checked for writing, or float32 labels go into the float16 cache."""
    def run(dtype):
        return LabelCache(cache_dir=str(tmp_path / 'cache'), model='some/model',
                          generator=dict(type='SignatureTestGenerator', iters=10),
                          writer_dtype=dtype)
    first = run('float32')
    first.save(KEYS[0], LABEL)
    shutil.rmtree(tmp_path / 'cache')
    run('float16').save(KEYS[1], LABEL)
    assert first.load(KEYS[1]) is not None
    with pytest.raises(UserInputError):
        first.save(KEYS[0], LABEL)


@pytest.mark.parametrize('who', ['the same run', 'another run'])
def test_labels_whose_signature_is_gone_are_not_taken_over(tmp_path, who):
    """Only cache.json deleted: neither the run that signed the folder nor another one adopts
    the labels left (their settings are unknown); the message names the file and the fix."""
    run = cache_of(tmp_path, iters=10)
    run.save(KEYS[0], LABEL)
    (tmp_path / 'cache' / 'cache.json').unlink()
    writer = run if who == 'the same run' else cache_of(tmp_path, iters=3)
    assert writer.load(KEYS[0]) is None
    with pytest.raises(UserInputError, match=r'holds labels but no cache.json .*delete the '
                                             r'folder once no run writes into it'):
        writer.save(KEYS[1], LABEL)
    assert not (tmp_path / 'cache' / 'cache.json').exists()
    assert not (tmp_path / 'cache' / KEYS[1][:2]).exists()
