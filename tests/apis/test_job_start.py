"""What a job decides around its work: inputs refused before any work, the folder a stopped run
made, a finished job that builds no model, an unreadable item counted as failed."""
import logging

import pytest

from mmdiffseg.apis.io import UserInputError, WorkItem
from mmdiffseg.apis.jobs import run_job
from test_io import HEADER, _job


def test_two_items_with_one_id_are_refused_before_any_work(tmp_path):
    items = [WorkItem('x', source='imgs/x.jpg'), WorkItem('y', source='imgs/y.jpg'),
             WorkItem('x', source='imgs/x.png')]
    with pytest.raises(UserInputError, match=r"two inputs have the id 'x', so their outputs "
                                             r"would overwrite each other: imgs/x.jpg and "
                                             r"imgs/x.png; item ids must be unique"):
        run_job(items, None, lambda b, _: [], tmp_path / 'out', HEADER)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('sizes, match', [
    (dict(batch_size=0), r'batch_size \(--batch-size\) must be an integer of 1 or more, got 0'),
    (dict(batch_size=2.0), r'batch_size .* got 2\.0'),
    (dict(workers=-1), r'workers \(--workers\) must be None \(the default\), 0 .* got -1'),
    (dict(batch_size=True), r'batch_size .* got True'),   # (a bool is an int to Python)
    (dict(workers=True), r'workers .* got True')])
def test_a_batch_size_or_worker_count_out_of_range_is_bad_input(tmp_path, sizes, match):
    """The Python API's batch_size=0 stopped in the job's plan ('range() arg 3 must not be
    zero'), workers=-1 in its process pool, both after the folder was made."""
    items, load, compute = _job([])
    with pytest.raises(UserInputError, match=match):
        run_job(items, load, compute, tmp_path / 'out', HEADER, **sizes)
    assert not (tmp_path / 'out').exists()


def test_numpy_integers_are_sizes_too():
    import numpy as np

    from mmdiffseg.apis.jobs import check_job_sizes
    check_job_sizes(np.int64(4), np.int64(0))
    check_job_sizes(4, None)


def test_image_labels_that_are_no_mapping_are_bad_input(tmp_path):
    from PIL import Image

    from mmdiffseg.apis import pseudo_label
    Image.new('RGB', (8, 8)).save(tmp_path / 'x.png')
    for labels in ([['cat']], (['x', ['cat']],)):   # (a tuple of pairs would make a dict)
        with pytest.raises(UserInputError, match=r'image_labels: expected a dict of image id -> '
                                                 rf'the class names in it, got a '
                                                 rf'{type(labels).__name__}'):
            pseudo_label(str(tmp_path / 'x.png'), tmp_path / 'out', 'org/sd',
                         dict(type='ISeg', preset='wsss_voc'), 'voc', labels)
    assert not (tmp_path / 'out').exists()


def test_an_output_path_that_is_a_file_is_bad_input(tmp_path):
    (tmp_path / 'file').write_text('')
    items, load, compute = _job([])
    with pytest.raises(UserInputError, match=r'--out .*/file is a file; --out must be a folder'):
        run_job(items, load, compute, tmp_path / 'file', HEADER)
    with pytest.raises(UserInputError, match=r'--out .*/file/sub: .*/file is a file'):
        run_job(items, load, compute, tmp_path / 'file' / 'sub', HEADER)


def test_a_folder_made_by_another_tool_is_refused_for_that_alone(tmp_path):
    """Another tool's folder differs in most settings: the message names the tool, not them."""
    items, load, compute = _job([])
    out = tmp_path / 'out'
    run_job(items[:1], load, compute, out, dict(HEADER, tool='pseudo_label', classes=['a']))
    with pytest.raises(UserInputError) as error:
        run_job(items, load, compute, out, dict(HEADER, tool='segment', classes=['b'], size=8))
    assert str(error.value) == (f'--out {out} was made by pseudo_label.py, not segment.py: '
                                'choose another --out (or rerun pseudo_label.py to resume it)')
    with pytest.raises(UserInputError, match=r'different settings:\n  classes: folder has ') as e:
        run_job(items, load, compute, out, dict(HEADER, tool='pseudo_label', classes=['b']))
    assert '--label-set' not in str(e.value)
    synth = tmp_path / 'synth'
    run_job(items[:1], load, compute, synth, dict(HEADER, tool='synthesize', classes=['a']))
    with pytest.raises(UserInputError, match=r"classes: folder has .*\nclasses: synthesize.py's "
                                             r'masks index the --label-set, else .*this '
                                             r'folder\'s: --label-set "a," resumes it .* \(a '
                                             r'folder .* e.g. --label-set voc, takes later'):
        run_job(items, load, compute, synth, dict(HEADER, tool='synthesize', classes=['a', 'b']))


def test_a_folder_of_an_earlier_label_computation_is_refused_with_the_reason(tmp_path):
    """A tool's manifest records LABELS_VERSION: a folder made before it (no version) or with
    another one is not resumed, so its labels are never mixed with those of this computation."""
    from mmdiffseg.apis.builders import job_header
    from mmdiffseg.generators import ISeg
    from mmdiffseg.generators.base import LABELS_VERSION
    items, load, compute = _job([])
    header = job_header('pseudo_label', 'some/model', 'float32', ISeg(classes=['a']), ['a'])
    assert header['labels_version'] == LABELS_VERSION
    out = tmp_path / 'out'
    run_job(items[:2], load, compute, out, {k: v for k, v in header.items()
                                            if k != 'labels_version'})
    with pytest.raises(UserInputError) as error:
        run_job(items, load, compute, out, header)
    assert (f'  labels_version: folder has <absent>, this run has {LABELS_VERSION}\n'
            'labels_version: its labels were made by an earlier mmdiffseg') in str(error.value)
    assert str(error.value).endswith('Use another --out folder, or rerun with the same settings.')
    run_job(items, load, compute, tmp_path / 'new', header)     # the same header resumes
    run_job(items, load, compute, tmp_path / 'new', header)


def test_a_run_stopped_before_writing_leaves_no_folder_it_made(tmp_path):
    """Bad input found at the model load (in ``prepare``): the folders the run made are removed
    again; one that existed before, or that holds anything, is kept."""
    items, load, _ = _job([])
    existing = tmp_path / 'existing'
    existing.mkdir()

    def bad_model():
        raise UserInputError('no such model')

    for out in (tmp_path / 'a' / 'b' / 'out', existing, existing / 'sub'):
        with pytest.raises(UserInputError, match='no such model'):
            run_job(items, load, None, out, HEADER, prepare=bad_model)
    assert [p.name for p in tmp_path.iterdir()] == ['existing']
    assert list(existing.iterdir()) == []

    def writes_then_fails():
        (tmp_path / 'new' / 'notes.txt').write_text('kept')
        bad_model()

    with pytest.raises(UserInputError, match='no such model'):
        run_job(items, load, None, tmp_path / 'new', HEADER, prepare=writes_then_fails)
    assert (tmp_path / 'new' / 'notes.txt').read_text() == 'kept'


def test_a_finished_job_is_not_prepared_again(tmp_path):
    """A rerun with every item done from the same inputs builds no model (``prepare``) and
    reports them all as already done; one missing output builds it."""
    calls = []
    items, load, compute = _job(calls)
    items = items[:3]  # all readable

    def no_model():
        raise AssertionError('the model was built')

    run_job(items, load, None, tmp_path, HEADER, batch_size=2, prepare=lambda: compute)
    summary = run_job(items, load, None, tmp_path, HEADER, batch_size=2, prepare=no_model)
    assert (summary.made, summary.already_done, summary.failed) == (0, 3, [])
    assert summary.line().startswith('made 0, already done 3, failed 0, ')
    (tmp_path / 'out/item2.txt').unlink()
    with pytest.raises(AssertionError, match='the model was built'):
        run_job(items, load, None, tmp_path, HEADER, batch_size=2, prepare=no_model)


def test_an_unreadable_item_is_logged_and_counted_as_failed(tmp_path, monkeypatch):
    from mmdiffseg.apis import jobs
    logged = []
    levels = {}

    def log(message, logger=None, level=logging.INFO):
        logged.append(message)
        levels[message] = level
    monkeypatch.setattr(jobs, 'print_log', log)
    items, load, compute = _job([])
    run_job(items, load, compute, tmp_path, HEADER, batch_size=3)
    failed = 'failed item3: item3 is corrupt (not made; counted as failed)'
    assert failed in logged and levels[failed] == logging.WARNING   # (found with the warnings)
    assert logged[-2].startswith('summary: made 6, already done 0, failed 1, ')
    logged.clear()
    run_job(items, load, compute, tmp_path, HEADER, batch_size=3)
    assert logged[-2].startswith('summary: made 0, already done 6, failed 1, ')
