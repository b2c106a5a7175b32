"""check_model: names that start like a path are folders even without a '/' or a folder there."""
import pytest

from mmdiffseg.apis.builders import check_model
from mmdiffseg.apis.io import UserInputError


@pytest.mark.parametrize('name', ['.sd21-local', '/nowhere-sd21'])
def test_a_path_like_name_is_a_missing_folder_not_a_hub_id(name, tmp_path, monkeypatch):
    """'.x' and '/x' (no such folder, at most one '/') are refused as folders without
    model_index.json, not passed on as hub ids."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match=f"model '{name}' not found: expected a diffusers"):
        check_model(name)


def test_a_plain_name_without_slash_is_a_hub_id(tmp_path, monkeypatch):
    """A bare name that is no folder here is passed on unchanged."""
    monkeypatch.chdir(tmp_path)
    assert check_model('sd21-local') == 'sd21-local'


def test_a_tilde_name_of_no_user_is_a_named_input_error(tmp_path, monkeypatch):
    """'~x' where x is no user: pathlib cannot expand it (RuntimeError); the tool says so as bad
    input (exit status 2) instead of a traceback."""
    monkeypatch.chdir(tmp_path)
    for name in ('~no-such-user-sd21', '~no-such-user-sd21/model'):
        with pytest.raises(UserInputError, match=f"model '{name}': '~no-such-user-sd21' is no "
                                                 "user's home folder here"):
            check_model(name)


def test_a_tilde_name_of_no_user_is_named_by_the_api_and_the_model_identity_too():
    """The same refusal below the tools (a training config's ``model_id``, the Python API): the
    engine's loader and the model identity name the model instead of pathlib's bare error."""
    from mmdiffseg.attention import DiffusionAttentionEngine
    from mmdiffseg.provenance import model_id_of
    name = '~no-such-user-sd21/model'
    for call in (model_id_of, DiffusionAttentionEngine.from_pretrained):
        with pytest.raises(ValueError, match=f"model '{name}': '~no-such-user-sd21' is no user's "
                                             "home folder here.*give the folder's full path"):
            call(name)
