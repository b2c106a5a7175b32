"""MaskGenerator base audit: images of several sizes are labelled group by group with their own
attention, prompts, token positions and class names; the contract's checks on classes and
ignore_index."""
import pytest
import torch

from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import MaskGenerator


class Recorder(MaskGenerator):
    """Labels each sample with the value of its attention map; records what each call got."""

    def __init__(self, classes=None, **kwargs):
        super().__init__(classes, **kwargs)
        self.calls = []

    def forward(self, maps, images, class_names):
        self.calls.append(dict(prompts=list(maps.prompts), positions=list(maps.token_positions),
                               names=class_names, images=images))
        height, width = images.shape[-2:] if images is not None else maps.image_size
        value = maps.maps['x'][:, 0, 0].long()
        return value[:, None, None].expand(-1, height, width).clone()


def three_samples():
    """Sample b's only map entry is b; its prompt 'p<b>' and token positions {'c<b>': [b]}."""
    return AttentionMaps(maps={'x': torch.arange(3.0).reshape(3, 1, 1)},
                         prompts=['p0', 'p1', 'p2'],
                         token_positions=[{'c0': [0]}, {'c1': [1]}, {'c2': [2]}],
                         image_size=(4, 4))


def test_images_of_two_sizes_get_their_own_maps_prompts_and_names():
    """Images 0 and 2 (2x3) are labelled together, image 1 (4x5) alone: each label holds its own
    sample's value at its own size, and each call sees only its samples' prompts, token
    positions and class names, in order."""
    generator = Recorder()
    images = [torch.zeros(3, 2, 3), torch.zeros(3, 4, 5), torch.zeros(3, 2, 3)]
    names = [['a'], ['b'], ['c']]
    labels = generator(three_samples(), images, names)
    assert [tuple(lab.shape) for lab in labels] == [(2, 3), (4, 5), (2, 3)]
    assert [lab.unique().tolist() for lab in labels] == [[0], [1], [2]]
    first, second = generator.calls
    assert first['prompts'] == ['p0', 'p2'] and second['prompts'] == ['p1']
    assert first['positions'] == [{'c0': [0]}, {'c2': [2]}]
    assert second['positions'] == [{'c1': [1]}]
    assert first['names'] == [['a'], ['c']] and second['names'] == [['b']]
    assert tuple(first['images'].shape) == (2, 3, 2, 3)


def test_maps_without_images_are_labelled_at_the_maps_size_with_the_class_names():
    generator = Recorder()
    labels = generator(three_samples(), None, [['a'], ['b'], ['c']])
    assert tuple(labels.shape) == (3, 4, 4) and generator.calls[0]['images'] is None
    assert generator.calls[0]['names'] == [['a'], ['b'], ['c']]


def test_background_index_is_the_background_class_or_the_ignore_index():
    assert Recorder(['cat', 'background']).background_index == 1
    assert Recorder(['cat', 'dog'], ignore_index=7).background_index == 7
    assert Recorder(['cat', 'dog']).background_index == 255


@pytest.mark.parametrize('ignore_index, ok', [(2, True), (1, False), (255, True), (256, False)])
def test_ignore_index_may_be_any_label_after_the_classes_up_to_255(ignore_index, ok):
    """With two classes, labels 0 and 1 are taken: 2..255 are free for unsure pixels (a uint8
    label cache holds up to 255)."""
    if ok:
        assert Recorder(['cat', 'dog'], ignore_index=ignore_index).ignore_index == ignore_index
    else:
        with pytest.raises(ValueError, match='ignore_index'):
            Recorder(['cat', 'dog'], ignore_index=ignore_index)


def test_a_name_given_twice_or_blank_is_refused_and_three_times_too():
    with pytest.raises(ValueError, match=r"classes names \['cat'\] more than once"):
        Recorder(['cat', 'dog', 'cat', 'cat'])
    with pytest.raises(ValueError, match='non-empty strings'):
        Recorder(['cat', ''])


@pytest.mark.parametrize('name', ['Background', 'BACKGROUND', ' background'])
def test_background_spelled_otherwise_is_refused(name):
    """'Background' was an ordinary class: prompted as an object, no pixel of class 0 (training
    learnt no background), silently."""
    with pytest.raises(ValueError, match=rf"Recorder: class {name!r} is not spelled 'background'"
                                         r".*write 'background'$"):
        Recorder([name, 'plane'])
    assert Recorder(['background', 'plane']).background_index == 0


def test_class_names_as_one_string_are_refused_naming_the_list_form():
    generator = Recorder(['cat', 'dog'])
    with pytest.raises(ValueError, match="is a string; class names are one list per image"):
        generator.class_indices('cat')
    with pytest.raises(ValueError, match='needs class names, one list per image'):
        generator.name_lists('cat')
    assert generator.name_lists((['dog'], ['cat'])) == [['dog'], ['cat']]


# -- options: the messages a config author reads --------------------------------------------------
def test_a_template_that_is_no_string_or_has_a_stray_brace_is_refused_with_the_fix():
    from mmdiffseg.options import check_template
    with pytest.raises(ValueError, match=r"it is a list, not a string with \{\} for the class"):
        check_template('G', 't', ['a {}'], '')
    with pytest.raises(ValueError, match=r"'a \{': .*; write literal braces as \{\{ and \}\}"):
        check_template('G', 't', 'a {', '')


def test_token_offsets_of_none_are_none_and_an_unmatched_name_lists_the_choices():
    """``token_offsets=None`` (the configs' default) reads as no offsets; a name nothing is near
    gets the list of the names instead of a guess."""
    from mmdiffseg.options import check_token_offsets
    assert check_token_offsets('G', None, ['cat', 'dog'], 'classes') == {}
    with pytest.raises(ValueError, match=r"names 'zzzzzz', which is not one of the classes: "
                                         r"cat, dog$"):
        check_token_offsets('G', {'zzzzzz': [0]}, ['cat', 'dog'], 'classes')


def test_an_unbounded_real_refuses_nan_saying_it_must_be_finite():
    from mmdiffseg.options import check_real
    with pytest.raises(ValueError, match=r'^G: x must be a number \(finite\), got nan$'):
        check_real('G', 'x', float('nan'))


def test_labels_resized_by_labels_at_stay_int64():
    """A label resized to its image's size is int64 like forward's (label caches and gathers
    index with it), the resized values those of the nearest pixel centre."""
    generator = Recorder()
    small, same = generator.labels_at(three_samples(), None, None, [(2, 2), (4, 4), (8, 8)])[:2]
    assert small.dtype == same.dtype == torch.int64
    assert small.tolist() == [[0, 0], [0, 0]] and same.unique().tolist() == [1]


def test_labels_at_refuses_a_size_count_other_than_the_batch():
    """Two sizes for three samples would drop the third label silently (zip)."""
    with pytest.raises(ValueError, match=r'labels_at: 2 sizes for 3 images'):
        Recorder().labels_at(three_samples(), None, None, [(2, 2), (4, 4)])


def test_the_dataset_index_hint_is_given_only_for_integer_names():
    generator = Recorder(['cat', 'dog'])
    with pytest.raises(ValueError, match=r'pass \[generator.classes\[i\] for i in indices\]'):
        generator.class_indices([0, 1])
    with pytest.raises(ValueError) as error:
        generator.class_indices([None])
    assert str(error.value) == 'Recorder: class names are strings from .classes, got [None]'


def test_what_a_generator_must_define_raises_until_defined_and_model_notes_default_to_none():
    """capture_spec, extract_kwargs and forward are the subclass's to write: the base raises
    NotImplementedError (a custom generator that leaves one out fails at once, not with a None
    spec, no prompts or no labels); model_notes has nothing to say by default."""
    base = MaskGenerator(['cat', 'dog'])
    with pytest.raises(NotImplementedError, match=r'^MaskGenerator.capture_spec is not defined: '
                                                  'return the CaptureSpec'):
        base.capture_spec
    with pytest.raises(NotImplementedError, match=r'^MaskGenerator.extract_kwargs\(\) is not '
                                                  'defined: return the keyword arguments'):
        base.extract_kwargs([['cat']])
    with pytest.raises(NotImplementedError, match=r'^MaskGenerator.forward\(\) is not defined: '
                                                  r'turn the captured maps into labels'):
        base(three_samples(), None, [['cat']] * 3)
    assert base.model_notes([object()]) == []
    assert Recorder().model_notes([]) == []
