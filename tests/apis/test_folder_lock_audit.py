"""The folder lock when the lock file is removed or replaced between opening and locking it (its
holder removes the file before releasing it): the lock is then taken on the file at the path, so
the folder holds one lock file, naming this process, and another run is refused."""
import multiprocessing
import os

import pytest

from mmdiffseg.apis import folder_lock
from mmdiffseg.apis.folder_lock import LOCK_NAME, job_lock
from mmdiffseg.apis.io import UserInputError


def _try_from_another_process(folder, answers):
    try:
        with job_lock(folder):
            answers.put('locked')
    except UserInputError as exc:
        answers.put(str(exc))


@pytest.mark.timeout(60)
@pytest.mark.parametrize('replaced', [False, True])
def test_a_lock_file_removed_by_its_holder_meanwhile_is_locked_again_at_its_path(
        tmp_path, monkeypatch, replaced):
    """The first lock lands on a file already unlinked (or replaced by a new one): it is dropped
    and the file now at the path is locked, so a second process sees this one as the holder."""
    real_lockf = folder_lock.fcntl.lockf
    calls = []

    def lockf_after_the_holder_left(fd, flags):
        if not calls:  # the holder unlinked the file this process had just opened
            (tmp_path / LOCK_NAME).unlink()
            if replaced:  # and a third run created a new one there
                (tmp_path / LOCK_NAME).write_text('')
        calls.append(fd)
        return real_lockf(fd, flags)
    monkeypatch.setattr(folder_lock.fcntl, 'lockf', lockf_after_the_holder_left)
    with job_lock(tmp_path):
        context = multiprocessing.get_context('fork')
        answers = context.Queue()
        other = context.Process(target=_try_from_another_process, args=(tmp_path, answers))
        other.start()
        answer = answers.get(timeout=30)
        other.join(30)
        assert f'(pid {os.getpid()} on ' in answer and 'another run is writing' in answer
        # read last: closing any descriptor of the file drops this process's lockf lock
        assert (tmp_path / LOCK_NAME).read_text().startswith(f'pid {os.getpid()} on ')
        assert len(calls) == 2  # the file at the path was locked the second time
    assert not (tmp_path / LOCK_NAME).exists()
