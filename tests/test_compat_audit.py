"""Gap found by a mutation audit of mmdiffseg.compat: config_fromfile's pkg_resources message."""
import pytest
from mmengine.config import Config

from mmdiffseg.compat import config_fromfile


def test_only_a_missing_pkg_resources_is_reworded(monkeypatch):
    """A config's own missing module is raised as it is; only pkg_resources gets the pin."""
    def missing(name):
        def fromfile(path):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return fromfile
    monkeypatch.setattr(Config, 'fromfile', missing('my_plugin'))
    with pytest.raises(ModuleNotFoundError, match='my_plugin'):
        config_fromfile('c.py')
    monkeypatch.setattr(Config, 'fromfile', missing('pkg_resources'))
    with pytest.raises(ImportError, match=r'c\.py: .*setuptools>=77,<82'):
        config_fromfile('c.py')
