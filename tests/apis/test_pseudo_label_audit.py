"""pseudo_label's manifest header records the work size, so a folder labelled at one size is not
resumed (mixed) by a run at another."""
import importlib

from mmdiffseg.apis.io import WorkItem

pseudo_label_api = importlib.import_module('mmdiffseg.apis.pseudo_label')
HUB_ID = 'test-org/not-downloaded'  # a hub id: checked and recorded, never loaded here


def test_the_header_records_the_work_size(tmp_path, monkeypatch):
    headers = []
    monkeypatch.setattr(pseudo_label_api, 'run_job',
                        lambda items, read, _unused, out_dir, header, **_: headers.append(header))
    items = [WorkItem('a', dict(image=str(tmp_path / 'in' / 'a.png')))]
    for size in (256, 512):
        pseudo_label_api.pseudo_label(items, tmp_path / 'out', HUB_ID, dict(type='ISeg'),
                                      ['background', 'cat'], {'a': ['cat']}, work_size=size)
    assert [h['work_size'] for h in headers] == [256, 512]
    assert headers[0]['tool'] == 'pseudo_label'


def test_image_labels_name_an_image_in_either_unicode_form(tmp_path, monkeypatch):
    """An image copied from macOS is named in decomposed form (NFD): its labels, keyed in either
    form, were 'no image-level labels' for it (the names print alike); training's reader finds
    them in either form."""
    import unicodedata
    runs = []
    monkeypatch.setattr(pseudo_label_api, 'run_job',
                        lambda items, *_, **__: runs.append([it.inputs['classes'] for it in items]))
    name = unicodedata.normalize('NFD', 'café')
    items = [WorkItem(name, dict(image=str(tmp_path / 'in' / f'{name}.png')))]
    for form in ('NFC', 'NFD'):
        pseudo_label_api.pseudo_label(items, tmp_path / form, HUB_ID, dict(type='ISeg'),
                                      ['background', 'cat'],
                                      {unicodedata.normalize(form, 'café'): ['cat']})
    assert runs == [[['cat']], [['cat']]]
