"""Pre-flight checks of a label cache folder (mmdiffseg.preflight_cache), called directly: the
precision labels are made in, a folder that cannot be written, and a signature made by other
settings."""
from apis.unwritable import readonly_folder
from mmengine.config import Config

from mmdiffseg.datasets import LabelCache
from mmdiffseg.preflight_cache import (check_cache_precision, check_cache_settings,
                                       check_cache_writable, writer_settings)

GENERATOR = dict(type='ISeg', vocabulary='voc')


def test_the_writer_precision_is_the_prefills_dtype_else_the_preprocessors():
    """``--dtype`` counts only for a prefill; else the preprocessor's, float32 by default; the
    weights variant is the preprocessor's engine_kwargs.variant."""
    cfg = Config(dict(model=dict(data_preprocessor=dict(engine_dtype='bfloat16'))))
    assert writer_settings(cfg, 'prefill', 'float16') == ('float16', None)
    assert writer_settings(cfg, 'train', 'float16') == ('bfloat16', None)
    assert writer_settings(cfg, 'prefill', None) == ('bfloat16', None)
    assert writer_settings(Config(dict(model=dict())), 'train', None) == ('float32', None)
    assert writer_settings(Config(dict()), 'prefill', None) == ('float32', None)
    cfg.model.data_preprocessor.engine_kwargs = dict(variant='fp16')
    assert writer_settings(cfg, 'prefill', None) == ('bfloat16', 'fp16')


def test_labels_of_another_weights_variant_are_refused_before_and_at_the_first_label(tmp_path):
    """A cache made from the plain weights took labels from the 'fp16' variant (cast weights,
    labels a few percent of pixels apart) without a word, and the reverse: the first writer
    records its variant; another writer is refused by the pre-flight for a cache that lacks
    labels, and by the cache itself; a cache recorded before variants were is unknown."""
    import json

    import pytest
    plain = tmp_path / 'plain'
    LabelCache(str(plain), 'org/sd', GENERATOR, writer_dtype='float32').sign()
    assert json.loads((plain / 'cache.json').read_text())['made_with'] == {
        'dtype': 'float32', 'variant': None}
    (item,) = check_cache_precision(str(plain), 'x.cache', ('float32', 'fp16'))
    assert item.what == (f'label cache {plain} holds labels made from the plain weights of its '
                         "model, and this run would add labels made from the 'fp16' weights "
                         'variant')
    assert item.fix.startswith('load the weights they were made from (model.data_preprocessor.'
                               'engine_kwargs without variant), or --cfg-options x.cache.'
                               'cache_dir=<another folder>.')
    assert item.where == ['x.cache.cache_dir']
    assert check_cache_precision(str(plain), 'x.cache', ('float32', 'fp16'), lambda d: None) == []
    with pytest.raises(ValueError, match=r"holds labels made from the plain weights of its model, "
                       r"and this run would add labels made from the 'fp16' weights variant: "
                       r'load the weights'):
        LabelCache(str(plain), 'org/sd', GENERATOR, writer_dtype='float32',
                   writer_variant='fp16').check_signature()
    half = tmp_path / 'half'
    LabelCache(str(half), 'org/sd', GENERATOR, writer_dtype='float32', writer_variant='fp16').sign()
    (item,) = check_cache_precision(str(half), 'x.cache', ('float32', None))
    assert "engine_kwargs.variant='fp16')" in item.fix
    assert LabelCache(str(half), 'org/sd', GENERATOR).check_signature()   # a reader
    # in float16 the 'fp16' files and the plain weights load the same tensors
    float16 = tmp_path / 'float16'
    LabelCache(str(float16), 'org/sd', GENERATOR, writer_dtype='float16',
               writer_variant='fp16').sign()
    assert check_cache_precision(str(float16), 'x.cache', ('float16', None)) == []
    assert LabelCache(str(float16), 'org/sd', GENERATOR, writer_dtype='float16').check_signature()
    assert len(check_cache_precision(str(float16), 'x.cache', ('float16', 'other'))) == 1
    signature = json.loads((half / 'cache.json').read_text())
    signature['made_with'] = {'dtype': 'float32'}    # recorded before variants were
    (half / 'cache.json').write_text(json.dumps(signature))
    assert check_cache_precision(str(half), 'x.cache', ('float32', None)) == []
    assert LabelCache(str(half), 'org/sd', GENERATOR, writer_dtype='float32').check_signature()


def test_a_signature_that_is_no_json_object_is_left_to_the_first_use(tmp_path):
    """A ``cache.json`` holding a list is no signature: not read as one here (the cache names
    it when it first reads it)."""
    (tmp_path / 'cache.json').write_text('["made_with"]')
    assert check_cache_precision(str(tmp_path), 'x.cache', ('float32', None)) == []
    assert check_cache_precision(str(tmp_path / 'none'), 'x.cache', ('float32', None)) == []


def test_an_existing_cache_folder_that_cannot_be_written_is_named_with_the_reason(tmp_path):
    """The folder itself is probed when it exists (its parent may be writable), and the reason
    is given in words: permission denied, or a read-only file system."""
    with readonly_folder(tmp_path / 'ro') as folder:
        (item,) = check_cache_writable(str(folder), 'x.cache')
        reason = item.what.split(f'({folder}: ', 1)[1]
        assert item.what.startswith(f'label cache folder {folder} cannot be written ({folder}: ')
        assert reason in ('permission denied)', 'the file system is read-only)')
        assert item.where == ['x.cache.cache_dir']
    assert check_cache_writable(str(tmp_path / 'a' / 'b'), 'x.cache') == []


def test_settings_are_compared_only_for_a_signed_cache_of_a_model_name(tmp_path):
    """No signature, a model that is no name, or generator options the generator refuses (the
    option check names those): nothing to compare here."""
    cache = dict(cache_dir=str(tmp_path), model='org/sd', generator=dict(GENERATOR, iters=3))
    assert check_cache_settings(cache, 'x.cache') == []
    LabelCache(str(tmp_path), 'org/sd', GENERATOR).sign()
    assert len(check_cache_settings(cache, 'x.cache')) == 1
    assert check_cache_settings(dict(cache, model=['org/sd']), 'x.cache') == []
    assert check_cache_settings(dict(cache, generator=dict(GENERATOR, iters=-1)),
                                'x.cache') == []


def test_labels_without_a_signature_are_named_before_the_run(tmp_path):
    """A folder whose cache.json was deleted while labels stayed: the labels' settings are
    unknown, so the pre-flight names the folder and the fix (the cache would refuse it at the
    first label it writes)."""
    cache = dict(cache_dir=str(tmp_path), model='org/sd', generator=GENERATOR)
    (tmp_path / 'ab').mkdir()
    assert check_cache_settings(cache, 'x.cache') == []
    (tmp_path / 'ab' / ('ab' + '0' * 38 + '.png')).write_bytes(b'')
    (item,) = check_cache_settings(cache, 'x.cache')
    assert item.what.startswith(f'label cache {tmp_path} holds labels but no cache.json')
    assert item.fix == f'--cfg-options x.cache.cache_dir=<another folder>, or delete {tmp_path}'


def test_a_full_cache_training_cannot_write_is_read_without_complaint(tmp_path):
    """Training adds only the labels a cache lacks: a teammate's full prefill on a read-only
    folder passes; one with a training image unlabelled is named with that image."""
    with readonly_folder(tmp_path / 'ro') as folder:
        assert check_cache_writable(str(folder), 'x.cache', lambda cache_dir: None) == []
        (item,) = check_cache_writable(str(folder), 'x.cache', lambda cache_dir: 'a.jpg')
        assert item.what.endswith('; a.jpg has no label there yet)')
        (item,) = check_cache_writable(str(folder), 'x.cache')   # a prefill writes
        assert 'cannot be written' in item.what
