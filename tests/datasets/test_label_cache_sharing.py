"""Label caches shared between users and runs: lock files a teammate's run can claim, and a
folder signed by a run stopped before its first label, which says that deleting it loses
nothing."""
import os

import pytest
from test_label_cache_claims import label_of, spec

import mmdiffseg.datasets.label_cache as label_cache
from mmdiffseg.apis.io import OutputWriteError
from mmdiffseg.datasets import LabelCache


def test_a_teammates_lock_file_is_claimed_read_only(tmp_path, monkeypatch):
    """Lock files were made 0o644 whatever the umask (labels follow it), so a teammate's run
    stopped at a lock file a stopped run of another user left ('cannot write ...lock:
    permission denied'), and again after --resume. They follow the umask now, and one this user
    may not write is locked read-only (flock needs no more)."""
    cache = LabelCache(**spec(tmp_path))
    key = 'ef' + '2' * 38
    old = os.umask(0o002)
    try:
        fd = cache._try_claim(key)
    finally:
        os.umask(old)
    assert os.stat(cache._lock_path(key)).st_mode & 0o777 == 0o664
    cache._release(key, fd)   # (no label: the lock file stays, as a stopped run's)
    real_open = os.open

    def as_another_user(path, flags, *args):   # (root here may write anything)
        if str(path).endswith('.lock') and flags & os.O_RDWR:
            raise PermissionError(13, 'Permission denied', str(path))
        return real_open(path, flags, *args)
    monkeypatch.setattr(label_cache.os, 'open', as_another_user)
    fd = cache._try_claim(key)
    assert fd is not None and LabelCache(**spec(tmp_path))._try_claim(key) is None
    cache._release(key, fd)
    monkeypatch.setattr(label_cache.os, 'open', lambda path, flags, *a: (_ for _ in ()).throw(
        PermissionError(13, 'Permission denied', str(path))))
    with pytest.raises(OutputWriteError, match=r'cannot write .*\.lock.*ermission denied'):
        cache._try_claim(key)


def test_a_signed_cache_without_labels_says_deleting_it_loses_nothing(tmp_path):
    """A run stopped before its first label (Ctrl-C at the model load) signed the folder for
    its settings: the next run's refusal said nothing of the folder holding no label."""
    LabelCache(**spec(tmp_path), writer_dtype='bfloat16').sign()
    other = LabelCache(**spec(tmp_path), writer_dtype='float32')
    with pytest.raises(ValueError, match=r'made in bfloat16.* It holds no label yet .*deleting '
                                         rf'it \(rm -r {tmp_path / "cache"}\) loses nothing'):
        other.check_signature()
    first = LabelCache(**spec(tmp_path), writer_dtype='bfloat16')
    first.save('ab' + '3' * 38, label_of('3'))
    with pytest.raises(ValueError) as refused:
        other.check_signature()
    assert 'holds no label yet' not in str(refused.value)
