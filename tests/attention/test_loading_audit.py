"""Loading helpers, cases test_loading.py leaves open: each Hub answer gets its own reason (a
gated repository is not called missing), a folder named like a checkpoint is no checkpoint, the
dtype keyword at a two-part version, and loading keys that pass the engine-option check."""
import pytest
import torch

from mmdiffseg.attention import loading


def _hub_error(kind, message):
    """A Hub error of class ``kind`` without the HTTP response its constructor wants."""
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    return error


def _failure(cause):
    error = OSError('Cannot load model org/x')
    error.__cause__ = cause
    return error


def test_each_hub_answer_gets_its_own_reason_and_fix():
    """GatedRepoError subclasses RepositoryNotFoundError, which subclasses HfHubHTTPError: the
    most specific answer is named; no cause at all is diffusers' own error."""
    from huggingface_hub import utils as errors
    gated = loading.hub_reason('org/x', _failure(_hub_error(errors.GatedRepoError, '403 gated')))
    assert gated[0] == 'the Hub keeps it gated'
    assert gated[1].startswith('accept its licence on huggingface.co and log in (`hf auth login`)')
    refused = loading.hub_reason('org/x', _failure(_hub_error(errors.HfHubHTTPError,
                                                              '500 Server Error\ndetails')))
    assert refused[0] == 'the Hub refused it (500 Server Error)'
    assert refused[1].startswith('pass a local diffusers folder (`hf download org/x')
    plain = loading.hub_reason('org/x', ValueError('bad config'))
    assert plain[0] == 'loading it failed (ValueError: bad config)'


def test_a_folder_named_like_a_checkpoint_is_not_one(tmp_path):
    """Only files count: a folder beside the one checkpoint, named ``*.pt``, leaves it the one."""
    (tmp_path / 'model.safetensors').write_bytes(b'0')
    (tmp_path / 'old.pt').mkdir()
    assert loading.single_file_checkpoint(tmp_path) == (tmp_path / 'model.safetensors').resolve()


def test_the_dtype_keyword_at_a_two_part_version(monkeypatch):
    """``0.40`` (release ``(0, 40)``) is already the version that takes ``dtype``."""
    import diffusers
    monkeypatch.setattr(diffusers, '__version__', '0.40')
    assert loading.dtype_option(torch.float32) == {'dtype': torch.float32}


@pytest.mark.parametrize('key', ['dtype', 'torch_dtype'])
def test_both_dtype_keywords_are_refused(key):
    with pytest.raises(ValueError, match=rf'^{key} is not a loading option here: the engine loads '
                                         r'in its own dtype'):
        loading.check_engine_options({key: torch.float16})


def test_known_and_far_off_loading_keys_pass():
    """Every diffusers loading key of the list passes as it is (each is its own nearest match),
    as does a key near none (it goes to diffusers)."""
    loading.check_engine_options({key: None for key in loading.LOADING_OPTIONS})
    loading.check_engine_options(dict(safety_checker=None, compile_unet=dict(backend='eager')))


@pytest.mark.parametrize('options, problem', [
    (dict(bakend='eager'), r"'bakend' is no torch.compile option \(did you mean 'backend'\?\)"),
    (dict(mode='bogus'), r"mode 'bogus': torch.compile's modes here are 'default' and "),
    (dict(backend='nope'), r"backend 'nope' is no torch.compile backend"),
    (dict(mode='reduce-overhead'), r"CUDA graphs: .*use mode='max-autotune-no-cudagraphs'"),
    (dict(mode='max-autotune'), r'CUDA graphs: '),
    (dict(backend='cudagraphs'), r'CUDA graphs: '),
    (dict(options={'triton.cudagraphs': True}), r'CUDA graphs: '),
])
def test_compile_options_are_checked_before_the_model_loads(options, problem):
    """A misspelt key was a TypeError from unet.compile after the load (the pre-flight passed
    it); CUDA graphs, which the docs rule out (the next replay overwrites a batch's maps), ran."""
    with pytest.raises(ValueError, match=rf'^compile_unet=.*: {problem}'):
        loading.check_engine_options(dict(compile_unet=options))
    for fine in (dict(backend='aot_eager', dynamic=True), dict(mode='max-autotune-no-cudagraphs'),
                 dict(mode='default', fullgraph=False)):
        loading.check_engine_options(dict(compile_unet=fine))
