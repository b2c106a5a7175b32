"""The loading helpers' checks without a model: dtype names and keywords, single-file
checkpoints among folders, the engine options' values, placing a module."""
import pytest
import torch

from mmdiffseg.attention import loading


@pytest.mark.parametrize('version,key', [('0.39.1', 'torch_dtype'), ('0.40.0', 'dtype'),
                                         ('0.41.0.dev0', 'dtype')])
def test_the_dtype_keyword_follows_the_diffusers_version(monkeypatch, version, key):
    import diffusers
    monkeypatch.setattr(diffusers, '__version__', version)
    assert loading.dtype_option(torch.float16) == {key: torch.float16}


def test_dtypes_by_name_and_non_floating_ones_refused():
    assert loading.torch_dtype('torch.bfloat16') is torch.bfloat16
    assert loading.torch_dtype(torch.float16) is torch.float16
    for bad in (torch.int64, 'float8', torch.bool):
        with pytest.raises(ValueError, match=r"dtype: expected a torch floating dtype or one of "
                                             r"\['bfloat16', 'float16', 'float32'\]"):
            loading.torch_dtype(bad)


def test_a_single_file_is_found_where_it_is_the_folders_one_checkpoint(tmp_path):
    one = tmp_path / 'original'
    one.mkdir()
    (one / 'README.md').write_text('x')
    (one / 'model.ckpt').write_bytes(b'0')
    assert loading.single_file_checkpoint(one) == (one / 'model.ckpt').resolve()
    assert loading.single_file_checkpoint(one / 'model.ckpt') == (one / 'model.ckpt').resolve()
    (one / 'ema.safetensors').write_bytes(b'0')  # two checkpoints: the folder, to name both
    assert loading.single_file_checkpoint(one) == one.resolve()
    diffusers_folder = tmp_path / 'diffusers'
    diffusers_folder.mkdir()
    (diffusers_folder / 'model_index.json').write_text('{}')
    (diffusers_folder / 'extra.safetensors').write_bytes(b'0')
    assert loading.single_file_checkpoint(diffusers_folder) is None
    assert loading.single_file_checkpoint(tmp_path / 'missing') is None


@pytest.mark.parametrize('value', [0, -1, True, 1.5, '1GB'])
def test_chunk_bytes_must_be_a_positive_whole_number(value):
    with pytest.raises(ValueError, match=rf'chunk_bytes must be a whole number of bytes \(at '
                                         rf'least 1\) or None .*got {value!r}'):
        loading.check_engine_options(dict(chunk_bytes=value))
    loading.check_engine_options(dict(chunk_bytes=1, variant='fp16'))


class _Module(torch.nn.Linear):
    """A module with diffusers' ``dtype`` property."""

    @property
    def dtype(self):
        return self.weight.dtype


def test_placed_casts_to_the_dtype_and_sets_eval_mode():
    module = _Module(2, 2).train()
    out = loading.placed(module, torch.device('cpu'), torch.float16)
    assert out.weight.dtype == torch.float16 and not out.training
    same = loading.placed(out, torch.device('cpu'), torch.float16)
    assert same.weight.dtype == torch.float16
    moved = loading.placed(_Module(2, 2), torch.device('meta'), torch.float32)  # (as to CUDA)
    assert moved.weight.device.type == 'meta'


def test_a_hub_id_with_only_its_index_cached_is_called_partly_cached(tmp_path):
    """A Hugging Face cache holding the id's ``model_index.json`` but not its components: the
    message says "only partly in" the cache (a download cut short), not "not in"."""
    snapshot = tmp_path / 'models--org--x' / 'snapshots' / ('a' * 40)
    snapshot.mkdir(parents=True)
    (snapshot / 'model_index.json').write_text('{}')
    (tmp_path / 'models--org--x' / 'refs').mkdir()
    (tmp_path / 'models--org--x' / 'refs' / 'main').write_text('a' * 40)
    error = OSError('Cannot load model org/x')
    error.__cause__ = ConnectionError('[Errno -2] Name or service not known')
    message = loading.hub_load_failure('org/x', error, cache_dir=str(tmp_path))
    assert f'exist), only partly in the local Hugging Face cache ({tmp_path}), and ' in message
    assert 'not in the' not in message
    other = loading.hub_load_failure('org/y', error, cache_dir=str(tmp_path))
    assert f'exist), not in the local Hugging Face cache ({tmp_path}), and ' in other
