"""A label cache's folder given with ``~``: the cache, its readers and the pre-flight all use the
home folder (the cache wrote a folder named ``~`` in the working directory, which the pre-flight,
expanding it, did not check, and which ``rm -rf ~`` would be typed to clear)."""
import numpy as np

import mmdiffseg  # noqa: F401
from mmdiffseg.datasets import LabelCache
from mmdiffseg.datasets.label_files import label_path, read_label
from mmdiffseg.preflight_cache import check_cache_settings

GENERATOR = dict(type='ISeg', vocabulary='voc')
KEY = 'ab' + '0' * 38


def test_a_cache_dir_under_the_home_folder_is_found_by_every_reader(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.chdir(tmp_path)
    LabelCache('~/labels', 'org/sd', GENERATOR).save(KEY, np.ones((2, 3), np.uint8))
    assert (tmp_path / 'home' / 'labels' / 'cache.json').is_file()
    assert not (tmp_path / '~').exists()
    assert read_label(label_path('~/labels', KEY)).tolist() == [[1, 1, 1]] * 2
    cache = dict(cache_dir='~/labels', model='org/sd', generator=dict(GENERATOR, iters=3))
    (item,) = check_cache_settings(cache, 'x.cache')
    assert 'generator.iters: cache 10, this run 3' in item.what
