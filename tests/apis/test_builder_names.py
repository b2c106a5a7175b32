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


def test_a_plain_name_without_slash_is_a_missing_folder_as_everywhere_else(tmp_path, monkeypatch):
    """A bare name that is no folder here is no hub id (those are ``org/name``): refused as a
    folder here, as the pre-flight and the engine's loader name it (it was passed on, for the
    loader to refuse after the job had started)."""
    from mmdiffseg.attention.loading import hub_load_failure
    from mmdiffseg.preflight import check_sd_model
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match="model 'sd21-local' not found: expected a diffusers"):
        check_model('sd21-local')
    (item,) = check_sd_model('sd21-local', ['model.sd_model'])
    assert item.what == "Stable Diffusion folder 'sd21-local' not found"
    assert 'no such folder' in hub_load_failure('sd21-local', OSError('x'))


def test_an_org_name_id_is_a_hub_id_unless_its_org_is_a_folder_here(tmp_path, monkeypatch):
    """``org/name`` goes to the Hub; with a folder ``org`` here it is that folder's ``name``."""
    monkeypatch.chdir(tmp_path)
    assert check_model('org/sd21') == 'org/sd21'
    (tmp_path / 'org').mkdir()
    with pytest.raises(UserInputError, match="model 'org/sd21' not found: expected a diffusers"):
        check_model('org/sd21')


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


def test_names_no_hub_id_can_have_are_folders_and_a_cached_id_is_the_hub_model(
        tmp_path, monkeypatch):
    """``sd-folder/`` (one '/', no such folder) was passed on as a hub id, and the model check
    stopped with huggingface_hub's validation traceback; an ``org/name`` id in the Hugging Face
    cache is that model even where a folder ``org`` is here (diffusers loads it so)."""
    import huggingface_hub

    from mmdiffseg.preflight import check_sd_model
    from mmdiffseg.provenance import names_a_local_path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    for name in ('sd-folder/', 'org/..', 'org/a b'):
        assert names_a_local_path(name), name
    with pytest.raises(UserInputError, match="model 'sd-folder/' not found: expected a diffusers"):
        check_model('sd-folder/')
    snapshot = tmp_path / 'hub/models--org--sd/snapshots/abc'
    snapshot.mkdir(parents=True)
    (snapshot / 'model_index.json').write_text('{}')
    (tmp_path / 'hub/models--org--sd/refs').mkdir()
    (tmp_path / 'hub/models--org--sd/refs/main').write_text('abc')
    (tmp_path / 'org').mkdir()
    assert not names_a_local_path('org/sd') and check_model('org/sd') == 'org/sd'
    assert names_a_local_path('org/other')
    (item,) = check_sd_model('~no-such-user-sd21/model', ['model.sd_model'])
    assert item.what.startswith("Stable Diffusion model '~no-such-user-sd21/model': "
                                "'~no-such-user-sd21' is no user's home folder here")

