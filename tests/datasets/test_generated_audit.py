"""Mutation audit of generated.py: which manifest a label folder's header is read from."""
import json

from mmdiffseg.datasets.generated import read_manifest_header


def test_manifest_jsonl_is_read_before_manifest_json(tmp_path):
    """A folder holding both: the header is the first line of manifest.jsonl (the tools' file),
    as documented; manifest.json is read only without it."""
    (tmp_path / 'manifest.jsonl').write_text(json.dumps(dict(classes=['a'])) + '\n{"id": 1}\n')
    (tmp_path / 'manifest.json').write_text(json.dumps(dict(classes=['b']), indent=2))
    assert read_manifest_header(tmp_path) == dict(classes=['a'])
    (tmp_path / 'manifest.jsonl').unlink()
    assert read_manifest_header(tmp_path) == dict(classes=['b'])
