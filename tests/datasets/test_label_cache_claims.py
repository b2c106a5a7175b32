"""LabelCache.fetch_or_make across real processes: each label made exactly once, no deadlock
between processes asking for the same keys in opposite orders, a killed owner leaves no torn file
and no claim to wait for, a hung owner is named after the timeout."""
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import time

import numpy as np
import pytest

import mmdiffseg  # noqa: F401
import mmdiffseg.datasets.label_cache as label_cache
from mmdiffseg.datasets.label_files import read_label
from mmdiffseg.apis.io import LabelWaitTimeout, OutputWriteError
from mmdiffseg.datasets import LabelCache
from mmdiffseg.generators.base import MaskGenerator
from mmdiffseg.registry import MASK_GENERATORS

FORK = multiprocessing.get_context('fork')


@MASK_GENERATORS.register_module(force=True)
class ClaimTestGenerator(MaskGenerator):
    method = 'claim-test'

    def config_dict(self):
        return dict(method=self.method)


def spec(tmp_path, **kwargs):
    return dict(cache_dir=str(tmp_path / 'cache'), model='some/model',
                generator=dict(type='ClaimTestGenerator'), **kwargs)


def label_of(key):
    """A label that depends on the key only (so any maker writes the same)."""
    return np.full((3, 4), int(key[-1]), np.uint8)


def worker(cache_spec, keys, log, start, seconds):
    """Fetch ``keys``; append the keys this process made to ``log`` (one JSON line per call)."""
    def make(claimed):
        time.sleep(seconds)
        with open(log, 'a') as f:
            f.write(json.dumps(claimed) + '\n')
        return [label_of(k) for k in claimed]
    start.wait()
    labels, _, _ = LabelCache(**cache_spec).fetch_or_make(keys, make)
    assert all(np.array_equal(labels[k], label_of(k)) for k in keys)


def made_by(log):
    return [k for line in log.read_text().splitlines() for k in json.loads(line)] \
        if log.exists() else []


def test_two_processes_make_each_label_once(tmp_path):
    keys = [f'{i:02d}key{i}' for i in range(1, 6)]
    start = FORK.Event()
    logs = [tmp_path / 'a.jsonl', tmp_path / 'b.jsonl']
    orders = [keys[:4], keys[::-1]]           # overlapping, in opposite orders
    procs = [FORK.Process(target=worker, args=(spec(tmp_path), order, log, start, 0.3))
             for order, log in zip(orders, logs)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    made = [made_by(log) for log in logs]
    assert sorted(made[0] + made[1]) == keys          # each key made once, by one of them
    cache = LabelCache(**spec(tmp_path))
    assert len(cache) == len(keys)
    assert all(np.array_equal(cache.load(k), label_of(k)) for k in keys)
    leftovers = [p.name for p in (tmp_path / 'cache').rglob('*') if p.is_file()
                 and p.suffix != '.png' and p.name != 'cache.json']
    assert leftovers == []


def hang_in_write(cache_spec, key, ready):
    """Claim ``key`` and stop for good in the middle of writing its label."""
    def stuck(*args):
        open(ready, 'w').close()
        time.sleep(600)
    label_cache.os.replace = stuck
    LabelCache(**cache_spec).fetch_or_make([key], lambda keys: [label_of(k) for k in keys])


def start_hung_owner(tmp_path, key):
    ready = tmp_path / 'ready'
    proc = FORK.Process(target=hang_in_write, args=(spec(tmp_path), key, ready))
    proc.start()
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline and proc.is_alive()
        time.sleep(0.02)
    return proc


def test_a_killed_owner_leaves_nothing_torn_and_no_claim(tmp_path):
    key = 'ab' + '0' * 37 + '7'
    owner = start_hung_owner(tmp_path, key)
    os.kill(owner.pid, signal.SIGKILL)
    owner.join()
    cache = LabelCache(**spec(tmp_path, wait_timeout=5))
    folder = tmp_path / 'cache' / 'ab'
    assert cache.load(key) is None and not cache.path(key).exists()
    assert [p.suffix for p in folder.glob(f'.{key}*')] == ['.tmp']   # the unfinished write
    start = time.monotonic()
    labels, made, waited = cache.fetch_or_make([key], lambda keys: [label_of(k) for k in keys])
    assert made == [key] and waited == [] and time.monotonic() - start < 5  # no wait_timeout
    assert sorted(p.name for p in folder.iterdir()) == [f'{key}.png']   # no temp, no lock
    assert np.array_equal(cache.load(key), label_of(key))


@pytest.mark.parametrize('damage', ['cut short', 'three channels'])
def test_a_damaged_label_is_made_again_and_replaced(tmp_path, damage, monkeypatch):
    """A label file damaged from outside (a disk fault; a power loss before its data reached the
    disk) is not a cached label: it is made again, once, and its file replaced."""
    import cv2
    logged = []
    monkeypatch.setattr(label_cache, 'print_log',
                        lambda message, **kwargs: logged.append((message, kwargs['level'])))
    cache = LabelCache(**spec(tmp_path))
    key = 'ef' + '0' * 37 + '5'
    path = cache.save(key, label_of(key))
    if damage == 'cut short':
        path.write_bytes(path.read_bytes()[:30])
    else:
        cv2.imwrite(str(path), np.zeros((3, 4, 3), np.uint8))
    assert cache.load(key) is None and read_label(path) is None
    labels, made, _ = cache.fetch_or_make([key], lambda keys: [label_of(k) for k in keys])
    assert made == [key] and np.array_equal(labels[key], label_of(key))
    assert np.array_equal(read_label(path), label_of(key))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    [(message, level)] = logged   # once, as a warning
    assert f'label cache file {path} is damaged' in message and level == logging.WARNING


def test_a_label_finished_between_the_look_and_the_claim_is_not_made_again(tmp_path,
                                                                           monkeypatch):
    """After claiming a key, fetch_or_make looks for the label once more: another process may
    have finished it between this process's first look and its claim, and making it again wastes
    a generator run."""
    cache = LabelCache(**spec(tmp_path))
    key = 'ab' + '0' * 38
    cache.save(key, np.zeros((2, 2), np.uint8))  # another process finished it...
    real_load, looks = LabelCache.load, []

    def load(self, k):  # ...just after this process looked
        looks.append(k)
        return None if len(looks) == 1 else real_load(self, k)
    monkeypatch.setattr(LabelCache, 'load', load)
    _, made, _ = cache.fetch_or_make([key], lambda keys: [np.ones((2, 2), np.uint8)] * len(keys))
    assert made == []
    assert not cache._lock_path(key).exists()   # the claim taken for nothing is released
    fd = LabelCache(**spec(tmp_path))._try_claim(key)
    assert fd is not None
    os.close(fd)


def test_a_failed_owner_keeps_the_lock_file_so_two_makers_cannot_claim_at_once(tmp_path):
    """An owner whose make failed releases its claim but leaves the lock file: a waiter already
    holds that file open, and a new file in its place would let a third process claim the key
    while the waiter makes it."""
    import fcntl
    owner, third = LabelCache(**spec(tmp_path)), LabelCache(**spec(tmp_path))
    key = 'cd' + '1' * 38
    fd = owner._try_claim(key)
    waiter = os.open(owner._lock_path(key), os.O_RDWR)  # a waiter opened the lock file
    owner._release(key, fd)  # the owner's make failed: no label written
    fcntl.flock(waiter, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the waiter now holds the claim
    try:
        assert third._try_claim(key) is None  # nobody else may claim it meanwhile
    finally:
        os.close(waiter)


@pytest.mark.timeout(60)   # a wait that never ends (a timer restarted at each poll) fails here
def test_waiting_for_a_hung_owner_times_out_naming_it_and_the_setting(tmp_path):
    """The tools' one-line error (an OutputWriteError, exit 3): the owner, how long it has held
    the claim, and the wait_timeout to raise for an owner that is alive and slow."""
    key = 'cd' + '0' * 37 + '3'
    owner = start_hung_owner(tmp_path, key)
    try:
        cache = LabelCache(**spec(tmp_path, wait_timeout=0.3))
        start = time.monotonic()
        with pytest.raises(LabelWaitTimeout) as caught:
            cache.fetch_or_make([key], lambda keys: pytest.fail('the owner is alive'))
        assert 0.3 <= time.monotonic() - start < 5.0   # after wait_timeout, not much later
        assert isinstance(caught.value, OutputWriteError)
        assert re.search(rf'waited 0 s \(wait_timeout\) for the label of {key}, claimed by '
                         rf'process {owner.pid} on {socket.gethostname()}, for \d+ s \(',
                         str(caught.value))
        assert "raise wait_timeout in the config's label cache" in str(caught.value)
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.join()


def test_the_set_up_of_making_runs_before_any_claim_and_only_for_a_missing_label(tmp_path):
    """``prepare`` (the model load) runs once, at the first missing label, while this process
    holds no claim (another process can claim every key then), and not at all when every label
    is cached."""
    keys = ['ef' + '0' * 37 + str(i) for i in range(3)]
    cache, other = LabelCache(**spec(tmp_path)), LabelCache(**spec(tmp_path))
    cache.save(keys[0], label_of(keys[0]))
    calls = []

    def prepare():
        for key in keys[1:]:   # each free: no claim held by this process
            fd = other._try_claim(key)
            assert fd is not None
            other._release(key, fd)
        calls.append(len(calls))

    labels, made, _ = cache.fetch_or_make(keys, lambda ks: [label_of(k) for k in ks], prepare)
    assert calls == [0] and made == keys[1:] and len(labels) == 3
    cache.fetch_or_make(keys, lambda ks: pytest.fail('all cached'), lambda: pytest.fail('cached'))


def test_the_first_signature_wins_and_folders_without_hard_links_sign(tmp_path, monkeypatch):
    """Two processes signing a new cache at once: the second finds the first's signature and
    checks it (a hard link refuses to replace it); where the file system has no hard links the
    signature is written by a plain replace. No temporary file is left either way."""
    cache = LabelCache(**spec(tmp_path), writer_dtype='float16')
    real_link = os.link

    def signed_meanwhile(src, dst):  # another process signs between the check and the link
        monkeypatch.setattr(label_cache.os, 'link', real_link)
        LabelCache(**spec(tmp_path), writer_dtype='float32').sign()
        return real_link(src, dst)

    monkeypatch.setattr(label_cache.os, 'link', signed_meanwhile)
    with pytest.raises(ValueError, match='holds labels made in float32, and this run would add '
                                         'labels made in float16'):
        cache.sign()
    assert sorted(p.name for p in (tmp_path / 'cache').iterdir()) == ['cache.json']

    def no_links(src, dst):
        raise PermissionError(1, 'Operation not permitted')

    monkeypatch.setattr(label_cache.os, 'link', no_links)
    other = tmp_path / 'other'
    LabelCache(**dict(spec(tmp_path), cache_dir=str(other)), writer_dtype='float16').sign()
    assert json.loads((other / 'cache.json').read_text())['made_with'] == {
        'dtype': 'float16', 'variant': None}
    assert sorted(p.name for p in other.iterdir()) == ['cache.json']


def test_a_label_made_here_after_waiting_is_counted_as_made_only(tmp_path):
    """The owner of a key gives up without a label while this process waits: this process then
    claims and makes it, and reports it as made, not also as waited for (the online labeler
    adds both counts to its logs)."""
    import threading
    key = 'ef' + '1' * 38
    owner = LabelCache(**spec(tmp_path))
    fd = owner._try_claim(key)
    threading.Timer(0.2, owner._release, (key, fd)).start()   # its make failed
    labels, made, waited = LabelCache(**spec(tmp_path, wait_timeout=30)).fetch_or_make(
        [key], lambda keys: [label_of(k) for k in keys])
    assert made == [key] and waited == []
    assert np.array_equal(labels[key], label_of(key))


def test_a_make_that_returns_too_few_labels_is_an_error(tmp_path):
    """make() must return one label per claimed key: a short list is refused (not zipped to the
    first keys, the rest claimed and made again without end), nothing is stored and the claims
    are released."""
    cache = LabelCache(**spec(tmp_path))
    keys = ['aa' + '0' * 37 + '1', 'aa' + '0' * 37 + '2']
    with pytest.raises(RuntimeError, match='made 1 labels for 2 images'):
        cache.fetch_or_make(keys, lambda claimed: [label_of(claimed[0])])
    assert len(cache) == 0
    for key in keys:   # no claim left behind
        fd = LabelCache(**spec(tmp_path))._try_claim(key)
        assert fd is not None
        os.close(fd)


def test_a_claim_overwrites_a_longer_record_of_an_earlier_owner(tmp_path):
    """A lock file left by an owner whose make failed keeps its record; the next owner's record
    replaces it whole, so a waiter's timeout message names the present owner, not a mix."""
    cache = LabelCache(**spec(tmp_path))
    key = 'cd' + '2' * 38
    cache._lock_path(key).parent.mkdir(parents=True)
    cache._lock_path(key).write_text(json.dumps(dict(host='h' * 200, pid=1, rank='7')))
    fd = cache._try_claim(key)
    try:
        assert re.fullmatch(rf'process {os.getpid()} on {socket.gethostname()}, for 0 s',
                            cache._owner(key))
    finally:
        cache._release(key, fd)


def test_a_folder_without_a_signature_has_no_differences_to_list(tmp_path):
    """Before the first label the folder has no signature: None (nothing to compare); once
    signed with this run's settings: none differ."""
    cache = LabelCache(**spec(tmp_path))
    assert cache.signature_differences() is None
    cache.sign()
    assert cache.signature_differences() == []


def test_a_label_opencv_cannot_encode_is_refused_by_its_key(tmp_path, monkeypatch):
    """OpenCV's failure flag is not ignored: no label file is written for the key."""
    cache = LabelCache(**spec(tmp_path))
    monkeypatch.setattr(label_cache.cv2, 'imencode', lambda ext, image: (False, None))
    with pytest.raises(RuntimeError, match='^could not encode the label of 01key1 as PNG$'):
        cache.save('01key1', label_of('01key1'))
    assert not cache.path('01key1').exists()


@pytest.mark.parametrize('label, found', [
    (np.zeros((0, 4), np.uint8), 'shape (0, 4), range empty'),
    (np.zeros((2, 3, 1), np.uint8), 'shape (2, 3, 1), range [0, 0]'),
    (np.full((2, 2), 256, np.int32), 'shape (2, 2), range [256, 256]'),
    (np.full((2, 2), -1, np.int32), 'shape (2, 2), range [-1, -1]')])
def test_a_label_that_is_no_hw_map_in_0_to_255_is_refused_and_not_written(
        tmp_path, label, found):
    """An empty label was a numpy reduction error instead of this message."""
    cache = LabelCache(**spec(tmp_path))
    with pytest.raises(ValueError) as error:
        cache.save('01key1', label)
    assert str(error.value) == f'LabelCache.save: expected an (H, W) label in 0..255, got {found}'
    assert not cache.path('01key1').exists()


def test_a_file_system_without_locks_is_named_with_the_fix(tmp_path, monkeypatch):
    """A lock refused for another reason than another owner (ENOLCK: NFS without locking) names
    the cache, the lock file and where to put the cache; the lock file is not left open."""
    import errno

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, 'No locks available')
    cache = LabelCache(**spec(tmp_path))
    monkeypatch.setattr(label_cache.fcntl, 'flock', flock)
    open_files = len(os.listdir('/proc/self/fd'))
    with pytest.raises(OSError) as raised:
        cache._try_claim('01key1')
    assert str(raised.value) == (
        f'label cache {cache.cache_dir}: cannot lock {cache._lock_path("01key1")} ([Errno '
        f'{errno.ENOLCK}] No locks available); put cache_dir on a file system with file locks '
        '(a local disk, or NFS with locking)')
    assert len(os.listdir('/proc/self/fd')) == open_files


def test_the_owner_of_a_claim_whose_lock_file_is_gone_is_unknown(tmp_path):
    """The timeout message names a claim's owner; a lock file already removed (or empty) names
    none; a held claim names this host and process."""
    cache = LabelCache(**spec(tmp_path))
    assert cache._owner('01key1') == 'an unknown process'
    fd = cache._try_claim('01key1')
    try:
        assert cache._owner('01key1').startswith(f'process {os.getpid()} on '
                                                 f'{socket.gethostname()}, for ')
    finally:
        os.close(fd)
    cache._lock_path('01key1').write_text('')
    assert cache._owner('01key1') == 'an unknown process'
    cache._lock_path('01key1').write_text(json.dumps(dict(host='h', pid=5, rank='1', since=1)))
    assert re.fullmatch(r'process 5 on h \(rank 1\), for \d+ s', cache._owner('01key1'))


def test_a_claim_on_a_full_disk_is_the_write_error_and_releases_its_lock(tmp_path):
    """The lock file opens on a full disk but its owner record cannot be written: the claim
    fails with the one-line write error (the tools' exit 3), not a bare OSError, and leaves no
    open file behind."""
    from apis.unwritable import full_folder
    from mmdiffseg.apis.io import OutputWriteError
    with full_folder(tmp_path / 'full') as folder:
        cache = LabelCache(**spec(folder))
        (folder / 'cache' / '01').mkdir(parents=True)
        with open(folder / 'filler', 'wb', buffering=0) as filler:
            with pytest.raises(OSError):
                while True:
                    filler.write(b'\0' * 4096)
        open_files = len(os.listdir('/proc/self/fd'))
        with pytest.raises(OutputWriteError) as raised:
            cache.fetch_or_make(['01key1'], lambda keys: [label_of(k) for k in keys])
        assert str(raised.value).startswith(f'cannot write {cache._lock_path("01key1")}: ')
        assert 'No space left on device' in str(raised.value)
        assert len(os.listdir('/proc/self/fd')) == open_files

