"""CaptureSpec / AttentionMaps: merging specs, class columns, finiteness checks."""
import pytest
import torch

from mmdiffseg.attention import AttentionMaps, CaptureRequest, CaptureSpec, merge_specs
from mmdiffseg.registry import MASK_GENERATORS

SD2 = 'stable-diffusion-2-1-base'


def test_request_names_and_validation():
    assert CaptureRequest('self', 64).name == 'self64'
    assert CaptureRequest('cross', 16, per_layer=True).name == 'cross16_layers'
    with pytest.raises(ValueError, match='kind'):
        CaptureRequest('both', 64)
    with pytest.raises(ValueError, match="two different requests are named 'x'"):
        CaptureSpec((CaptureRequest('self', 64, name='x'), CaptureRequest('self', 32, name='x')))


def test_merge_keeps_each_request_once_and_refuses_other_steps():
    a = CaptureSpec((CaptureRequest('self', 64), CaptureRequest('self', 32)))
    b = CaptureSpec((CaptureRequest('self', 32), CaptureRequest('cross', 16)))
    merged = merge_specs([a, b])
    assert merged.names == ['self64', 'self32', 'cross16']
    with pytest.raises(ValueError, match='step selections differ'):
        a.merge(CaptureSpec(b.requests, steps=(0, 1)))


def test_merged_spec_serves_two_generators_in_one_pass(tiny_engine):
    """One U-Net pass with DiffSeg's and (all-heads) iSeg's merged spec gives each generator the
    same maps as its own pass."""
    engine = tiny_engine(SD2)
    diffseg = MASK_GENERATORS.build(dict(type='DiffSeg'))
    iseg = MASK_GENERATORS.build(dict(type='ISeg', cross_heads=None, self_heads=[0]))
    images = torch.randint(0, 256, (1, 3, 512, 512), dtype=torch.uint8)
    kwargs = iseg.extract_kwargs([['cat']])
    kwargs['noise'] = None  # DiffSeg runs without noise; share the same latent
    merged = merge_specs([diffseg.capture_spec, iseg.capture_spec])
    both = engine.extract(images, capture=merged, **kwargs)
    alone = engine.extract(images, capture=iseg.capture_spec, **kwargs)
    for name in iseg.capture_spec.names:
        torch.testing.assert_close(both[name], alone[name], rtol=0, atol=1e-6)
    alone = engine.extract(images, capture=diffseg.capture_spec, **kwargs)
    for name in diffseg.capture_spec.names:
        torch.testing.assert_close(both[name], alone[name], rtol=0, atol=1e-6)


def _maps():
    cross = torch.zeros(2, 4, 6)
    cross[0, :, 4] = torch.tensor([1., 2., 3., 4.])
    cross[0, :, 5] = torch.tensor([3., 2., 1., 0.])
    cross[1, :, 2] = 7.0
    return AttentionMaps({'cross2': cross, 'self2': torch.full((2, 4, 4), 0.25)},
                         prompts=['a photo of potted plant', 'a cat'],
                         token_positions=[{'potted plant': [4, 5]}, {'cat': [2]}],
                         image_size=(8, 8))


def test_class_token_columns_mean_over_tokens_or_the_selected_ones():
    maps = _maps()
    cols = maps.class_token_columns('cross2', [['potted plant'], ['cat']])
    torch.testing.assert_close(cols[0][:, 0], torch.tensor([2., 2., 2., 2.]))
    torch.testing.assert_close(cols[1][:, 0], torch.full((4,), 7.0))
    plant_only = maps.class_token_columns('cross2', [['potted plant'], []],
                                          token_offsets={'potted plant': [1]})
    torch.testing.assert_close(plant_only[0][:, 0], torch.tensor([3., 2., 1., 0.]))
    assert plant_only[1].shape == (4, 0)


def test_class_token_columns_are_the_token_by_token_means_bit_for_bit():
    # one token (a view), a run of sub-tokens (a slice), scattered offsets (token by token)
    cross = torch.rand(1, 4096, 77, generator=torch.Generator().manual_seed(0))
    positions = {'cat': [5], 'potted plant': [7, 8, 9, 10], 'fire hydrant': [12, 13, 14]}
    maps = AttentionMaps({'cross': cross}, prompts=['p'], token_positions=[positions],
                         image_size=(512, 512))
    cols = maps.class_token_columns('cross', [list(positions)], {'fire hydrant': [0, 2]})[0]
    for c, idx in enumerate(([5], [7, 8, 9, 10], [12, 14])):
        expected = torch.stack([cross[0, :, i] for i in idx], -1).mean(-1)
        assert torch.equal(cols[:, c], expected), idx


def test_class_token_columns_errors_name_the_problem():
    maps = _maps()
    with pytest.raises(KeyError, match="'dog' is not in the prompt of sample 1"):
        maps.class_token_columns('cross2', [['potted plant'], ['dog']])
    with pytest.raises(KeyError, match="no 'cross16'"):
        maps.class_token_columns('cross16', [['cat']])
    maps.maps['cross2_layers'] = torch.zeros(2, 3, 4, 6)
    with pytest.raises(ValueError, match='per_layer'):
        maps.class_token_columns('cross2_layers', [['potted plant'], ['cat']])


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_check_finite_names_the_map(bad):
    maps = _maps()
    maps.check_finite()
    maps.maps['self2'][1, 2, 3] = bad
    with pytest.raises(ValueError, match="'self2'"):
        maps.check_finite()
    # a half-precision map is summed in float32 (no overflow at 65504), the others still named
    maps.maps['self2'] = torch.full((2, 300, 300), 60000.0, dtype=torch.float16)
    maps.check_finite()
    maps.maps['cross2'] = maps.maps['cross2'].half()
    maps.maps['cross2'][0, 0, 0] = bad
    with pytest.raises(ValueError, match="'cross2'"):
        maps.check_finite()


def test_a_request_needs_a_positive_resolution_and_merges_need_equal_steps_both_ways():
    """A resolution of 0 names no layer grid; a spec averaging steps (0, 1) does not take in one
    averaging every step (nor the reverse): one pass serves one step selection."""
    with pytest.raises(ValueError, match='resolution must be positive, got 0'):
        CaptureRequest('self', 0)
    every = CaptureSpec((CaptureRequest('self', 64),))
    some = CaptureSpec((CaptureRequest('cross', 16),), steps=(0, 1))
    for a, b in ((every, some), (some, every)):
        with pytest.raises(ValueError, match='step selections differ'):
            a.merge(b)


def test_class_token_matrix_pads_each_sample_with_zero_columns_after_its_classes():
    """Samples with fewer classes keep their columns first (column c = class c of the sample)
    and get zero columns after them, up to the batch's most classes."""
    maps = _maps()
    maps.token_positions[0]['cat'] = [5]
    matrix = maps.class_token_matrix('cross2', [['potted plant', 'cat'], ['cat']])
    assert matrix.shape == (2, 4, 2)
    torch.testing.assert_close(matrix[0], torch.tensor([[2., 3.], [2., 2.], [2., 1.], [2., 0.]]))
    torch.testing.assert_close(matrix[1, :, 0], torch.full((4,), 7.0))
    assert not matrix[1, :, 1].any()


def test_class_columns_refuse_offsets_past_a_class_and_samples_without_positions():
    """An offset past a class's tokens reads no token of it, and a sample without recorded
    token positions has no classes: both are errors, not another token's or sample's column."""
    maps = _maps()
    with pytest.raises(ValueError, match=r"^token_offsets\['cat'\] = \[1\] but 'cat' has only "
                                         r'1 token\(s\): pass offsets in 0\.\.0$'):
        maps.class_token_columns('cross2', [['potted plant'], ['cat']],
                                 token_offsets={'cat': [1]})
    with pytest.raises(ValueError, match=r"= \[-1\] but 'cat' has only 1 token"):  # not the last
        maps.class_token_columns('cross2', [['potted plant'], ['cat']],
                                 token_offsets={'cat': [-1]})
    maps.token_positions = maps.token_positions[:1]
    with pytest.raises(KeyError, match="'potted plant' is not in the prompt of sample 1"):
        maps.class_token_columns('cross2', [['potted plant'], ['potted plant']])


def test_a_capture_given_as_one_request_a_list_or_a_tuple_is_the_same_spec():
    """``capture=`` takes a spec, one request, or its requests as a list or a tuple (e.g. a
    spec's ``requests``); anything else is refused naming what is expected."""
    from mmdiffseg.attention.maps import as_capture_spec
    requests = (CaptureRequest('self', 8), CaptureRequest('cross', 4))
    spec = CaptureSpec(requests)
    assert as_capture_spec(spec) is spec
    assert as_capture_spec(list(requests)) == spec and as_capture_spec(requests) == spec
    assert as_capture_spec(requests[0]) == CaptureSpec(requests[:1])
    with pytest.raises(TypeError, match='expected a CaptureSpec.*got str'):
        as_capture_spec('self8')


def test_a_head_listed_twice_is_refused_however_often_it_is_repeated():
    """Each repeated head is named once, in order, with the list as given."""
    with pytest.raises(ValueError, match=r"'cross16': head\(s\) \[0, 2\] listed twice in "
                                         r"\(0, 3, 0, 2, 0, 2\); list each head once"):
        CaptureRequest('cross', 16, heads=[0, 3, 0, 2, 0, 2])


def test_layers_heads_and_steps_given_as_lists_or_tensors_make_the_same_spec():
    """Layers, heads and steps are stored as tuples of plain values: a request or spec built from
    lists, a range or a tensor equals (and hashes as) the one built from tuples of ints, so that
    merging them keeps one copy and their step selections agree."""
    layer = 'up_blocks.3.attentions.1.transformer_blocks.0.attn1'
    as_tuples = CaptureRequest('self', 64, layers=(layer,), heads=(0, 2))
    as_lists = CaptureRequest('self', 64, layers=[layer], heads=torch.tensor([0, 2]))
    assert as_lists == as_tuples and as_lists in {as_tuples}
    assert all(type(h) is int for h in as_lists.heads)
    spec = CaptureSpec((as_tuples,), steps=(0, 1))
    merged = spec.merge(CaptureSpec([as_lists], steps=range(2)))
    assert merged == spec and merged.steps == (0, 1) and hash(merged) == hash(spec)


def test_a_request_listed_twice_is_kept_once_and_merges_keep_the_steps(tiny_engine):
    """Two equal requests under one name are one request, not a clash, and captured once (each
    copy added its maps into the same buffer: rows summing to 2, SeeDiff's masks changed); a
    merge keeps the (equal) step selection of both specs; merging no spec gives the empty spec."""
    request = CaptureRequest('self', 32)
    assert CaptureSpec((request, CaptureRequest('self', 32))).names == ['self32']
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    maps = tiny_engine(SD2).extract(images, capture=[request, CaptureRequest('self', 8), request])
    torch.testing.assert_close(maps['self32'].sum(-1), torch.ones(1, 1024))
    a = CaptureSpec((request,), steps=(3, 5))
    b = CaptureSpec((CaptureRequest('cross', 16),), steps=(3, 5))
    merged = merge_specs([a, b])
    assert merged.steps == (3, 5) and merged.names == ['self32', 'cross16']
    assert merge_specs([]) == CaptureSpec()


def test_batch_size_is_the_first_dim_and_empty_maps_say_how_to_extract():
    """The batch size reads the first dim of a map (here 2 samples of 4 tokens); maps extracted
    with an empty spec have none and say which spec to extract with; they are finite."""
    assert _maps().batch_size == 2
    empty = AttentionMaps({})
    with pytest.raises(ValueError, match='holds no map.*capture=generator.capture_spec'):
        empty.batch_size
    empty.check_finite()


def test_a_missing_map_names_what_was_captured():
    """Indexing a missing map names the captured ones; ``in`` asks without raising."""
    assert 'self2' in _maps() and 'cross2' in _maps() and 'self64' not in _maps()
    with pytest.raises(KeyError, match=r"no 'self64'; captured: \['cross2', 'self2'\]\. "
                                       r'Extract with the generator'):
        _maps()['self64']


def test_class_token_matrix_of_one_sample_keeps_the_batch_dim():
    """A batch of one is ``(1, N, C)`` like any other batch."""
    maps = _maps()
    maps.maps['cross2'] = maps.maps['cross2'][:1]
    matrix = maps.class_token_matrix('cross2', [['potted plant']])
    assert matrix.shape == (1, 4, 1)
    torch.testing.assert_close(matrix[0, :, 0], torch.tensor([2., 2., 2., 2.]))


def test_an_offset_past_a_class_is_refused_even_beside_a_valid_one():
    """Offsets [1, 2] of a two-token class: offset 2 reads no token of the class, and the class
    does not silently fall back to offset 1 alone."""
    with pytest.raises(ValueError, match=r"token_offsets\['potted plant'\] = \[1, 2\] but "
                                         r"'potted plant' has only 2 token\(s\)"):
        _maps().class_token_columns('cross2', [['potted plant'], ['cat']],
                                    token_offsets={'potted plant': [1, 2]})
