"""An existing ``--out`` that is no job folder (no manifest) is written into only when it holds
none of the files the job would replace: a dataset's labels, images, overlays or split file stay
as they were, the run stops before any work. Ground truth is an input like the images."""
import json
import shutil

import pytest
from apis.gloo_ranks import two_ranks

from mmdiffseg.apis.io import ItemOutput, UserInputError, WorkItem
from mmdiffseg.apis.jobs import run_job

SPLIT = 'ImageSets/Segmentation/train.txt'


def _outputs(tool, item_id):
    """The files ``tool`` writes for one item (as the tools name them)."""
    return {'pseudo_label': [f'SegmentationClass/{item_id}.png'],
            'segment': [f'SegmentationClass/{item_id}.png', f'Overlays/{item_id}.jpg'],
            'synthesize': [f'JPEGImages/{item_id}.jpg', f'SegmentationClass/{item_id}.png'],
            'test': [f'{item_id}.txt']}[tool]


def _run(folder, tool, prepared=None):
    items = [WorkItem(i) for i in ('a', 'b')]

    def prepare():
        if prepared is not None:
            prepared.append(1)
        return lambda batch, _: [ItemOutput({rel: b'new' for rel in _outputs(tool, it.id)})
                                 for it in batch]
    return run_job(items, None, None, folder, dict(tool=tool), split_file=SPLIT, workers=0,
                   prepare=prepare)


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob('*') if p.is_file()}


@pytest.mark.parametrize('tool, in_the_way', [
    ('pseudo_label', 'SegmentationClass/b.png'),  # a dataset's ground truth
    ('segment', 'Overlays/a.jpg'),
    ('segment', 'contact_sheet.jpg'),
    ('synthesize', 'JPEGImages/a.jpg'),
    ('test', SPLIT),  # a dataset's split file
])
def test_a_folder_holding_files_the_job_would_replace_is_refused_before_any_work(
        tmp_path, tool, in_the_way):
    """Refused, naming the folder, the file and the fix, with nothing prepared (no model) or
    written; the folder without that file (only files the tool never writes) is written into."""
    unrelated = ['notes.txt', 'JPEGImages/b.png', 'SegmentationClass/other.png',
                 'ImageSets/Segmentation/val.txt']
    for rel in unrelated + [in_the_way]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b'mine')
    before, prepared = _files(tmp_path), []
    with pytest.raises(UserInputError) as error:
        _run(tmp_path, tool, prepared)
    assert str(error.value) == (
        f'--out {tmp_path} is not a job folder (it has no manifest.jsonl to resume) and already '
        f'holds files this run would replace, e.g. {in_the_way}: give another --out, or an '
        'empty or new folder')
    assert _files(tmp_path) == before and not prepared
    (tmp_path / in_the_way).unlink()
    assert _run(tmp_path, tool).made == 2
    assert all(_files(tmp_path)[rel] == b'mine' for rel in unrelated)


def test_a_job_folder_resumes_and_the_same_folder_without_its_manifest_is_refused(tmp_path):
    """The manifest (or a killed distributed run's rank manifests) makes a folder the job's own,
    resumed as it is; without it, the job's files are as foreign as a dataset's."""
    folder = tmp_path / 'out'
    assert _run(folder, 'pseudo_label').made == 2
    manifest = (folder / 'manifest.jsonl').read_text()
    (folder / 'manifest.jsonl').unlink()
    with pytest.raises(UserInputError, match=r'e\.g\. ImageSets/Segmentation/train\.txt, '
                                             r'SegmentationClass/a\.png: give another --out'):
        _run(folder, 'pseudo_label')
    (folder / 'manifest.rank1.jsonl').write_text(manifest)
    summary = _run(folder, 'pseudo_label')
    assert (summary.made, summary.already_done) == (0, 2)
    assert json.loads((folder / 'manifest.jsonl').read_text().split('\n')[0])['tool'] == \
        'pseudo_label'


def _two_ranks(tmp_path, folder, tool):
    """What each of two gloo ranks running the job ended with."""
    def work(rank, _):
        try:
            return f'made {_run(folder, tool).made}'
        except UserInputError as exc:
            return str(exc)
    return two_ranks(tmp_path, work)


def test_two_ranks_start_in_a_new_or_empty_folder_and_stop_together_in_a_dataset(tmp_path):
    """Both ranks create the folder and their manifests at once: neither takes the other's files
    for a foreign folder's. In a dataset folder both stop before writing anything."""
    assert _two_ranks(tmp_path, tmp_path / 'new', 'synthesize') == ['made 2', 'made 2']
    (tmp_path / 'empty').mkdir()
    assert _two_ranks(tmp_path, tmp_path / 'empty', 'synthesize') == ['made 2', 'made 2']
    assert _two_ranks(tmp_path, tmp_path / 'empty', 'synthesize') == ['made 0', 'made 0']
    dataset = tmp_path / 'dataset'
    shutil.copytree(tmp_path / 'empty', dataset)
    (dataset / 'manifest.jsonl').unlink()
    before = _files(dataset)
    refusals = _two_ranks(tmp_path, dataset, 'synthesize')
    assert refusals[0] == refusals[1] and f'--out {dataset} is not a job folder' in refusals[0]
    assert _files(dataset) == before


def test_ground_truth_where_the_labels_are_written_is_refused(tmp_path):
    """A dataset config's ground truth in ``<out>/SegmentationClass`` would be replaced by the
    label PNGs: refused before the model is looked for, like input images there."""
    from mmdiffseg.apis.pseudo_label import pseudo_label
    out = tmp_path / 'voc'
    items = [WorkItem('a', dict(image=str(tmp_path / 'images/a.jpg'),
                                gt=str(out / 'SegmentationClass/a.png')))]
    with pytest.raises(UserInputError, match=(
            rf'the ground truth in {out}/SegmentationClass lies where this run writes its label '
            rf'PNGs \(--out {out}\): they would replace it\. Give --out another folder, e\.g\. '
            rf'--out {out}_labels')):
        pseudo_label(items, out, str(tmp_path / 'no_model'), {}, ['a'], None)
    items[0].payload['gt'] = str(tmp_path / 'gt/a.png')
    with pytest.raises(UserInputError, match='no_model'):  # the next check
        pseudo_label(items, out, str(tmp_path / 'no_model'), {}, ['a'], None)
