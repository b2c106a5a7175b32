"""The generators called from Python with the wrong things: each mistake is refused naming the
argument and the fix (they gave wrong-shaped labels, dropped images, or bare errors)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sample_data import shared_path

import mmdiffseg  # noqa: F401
from mmdiffseg.attention import CaptureRequest, CaptureSpec
from mmdiffseg.datasets import DATASET_CLASSES
from mmdiffseg.generators import DiffSeg, ISeg, MaskGenerator, SeeDiff
from mmdiffseg.generators.base import LABELS_VERSION, older_labels_note, size_groups
from mmdiffseg.generators.testing import attention_from_labels
from mmdiffseg.registry import MASK_GENERATORS

VOC = DATASET_CLASSES['voc']


@pytest.fixture(scope='module')
def two_images():
    """Known-answer maps of two 64x64 images (a dog left, a cat right of the background)."""
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[0, :, :32] = VOC.index('dog')
    labels[1, :, 32:] = VOC.index('cat')
    maps, names = attention_from_labels(labels, VOC, self_resolutions=(64, 32, 16, 8),
                                        cross_resolutions=(32, 16))
    for key in ('self64', 'cross16', 'cross32'):  # iSeg's requests have names of their own
        maps.maps[f'iseg_{key}'] = maps.maps[key]
    return maps, names


def generators():
    return [DiffSeg(kl_thresholds=(1.1,) * 3, merge_precision='float32'),
            ISeg(vocabulary='voc', cross_heads=None, self_heads=None, use_cluster=False)]


@pytest.mark.parametrize('generator', generators(), ids=['DiffSeg', 'ISeg'])
def test_image_tensors_are_checked_against_the_maps(generator, two_images):
    """A (B, H, W, 3) tensor or one image for two maps gave labels of a wrong shape, silently;
    a (3, H, W) tensor is one image, labelled at its size as the docstring says."""
    maps, names = two_images
    images = torch.full((2, 3, 64, 64), 128.0)
    assert generator(maps, images, names).shape == (2, 64, 64)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\) RGB with B=2.*permute\(0, 3, 1, 2\)'):
        generator(maps, images.permute(0, 2, 3, 1), names)
    with pytest.raises(ValueError, match=r'B=2 \(the batch of the maps\), got \(1, 3, 64, 64\)'):
        generator(maps, images[:1], names)
    with pytest.raises(ValueError, match='1 images for attention maps of 2'):
        generator(maps, images[0], names)


@pytest.mark.parametrize('generator', generators(), ids=['DiffSeg', 'ISeg'])
def test_grey_and_rgba_batch_tensors_are_labelled_as_the_engine_takes_them(generator, two_images):
    """``(B, 1, H, W)`` and ``(B, 4, H, W)`` tensors, which the engine takes, were refused as
    not ``(B, 3, H, W)``; now grey is spread to RGB, alpha dropped, and labels are ``(B, H, W)``."""
    maps, names = two_images
    rgb = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0))
    rgba = torch.cat([rgb, torch.full((2, 1, 64, 64), 255, dtype=torch.uint8)], 1)
    assert torch.equal(generator(maps, rgba, names), generator(maps, rgb, names))
    grey = rgb[:, :1]
    labels = generator(maps, grey, names)
    assert labels.shape == (2, 64, 64)
    assert torch.equal(labels, generator(maps, grey.expand(-1, 3, -1, -1), names))


@pytest.mark.parametrize('generator', generators(), ids=['DiffSeg', 'ISeg'])
def test_labels_at_takes_one_size_per_image(generator, two_images):
    """One size for two images dropped the second; three gave an all-255 third or an
    IndexError."""
    maps, names = two_images
    assert [tuple(lab.shape) for lab in generator.labels_at(maps, None, names, [(8, 8), (4, 6)])] \
        == [(8, 8), (4, 6)]
    for sizes in ([(10, 10)], [(10, 10)] * 3):
        with pytest.raises(ValueError, match=f'labels_at: {len(sizes)} sizes for 2 images'):
            generator.labels_at(maps, None, names, sizes)


def test_labelled_diffseg_needs_the_class_names(two_images):
    """DiffSeg built with classes returned unlabelled segment ids (read as VOC classes) when the
    names were left out."""
    maps, names = two_images
    labelled = DiffSeg(classes=VOC, kl_thresholds=(1.1,) * 3, cross_resolutions=(16,),
                       merge_precision='float32')
    assert set(labelled(maps, None, names)[0].unique().tolist()) <= {0, VOC.index('dog')}
    fix = r'labelled mode.*one list per image.*without `classes` for unlabelled segment ids'
    for call in (lambda: labelled(maps, None, None), lambda: labelled.extract_kwargs(None),
                 lambda: labelled.labels_at(maps, None, None, [(8, 8)] * 2)):
        with pytest.raises(ValueError, match=fix):
            call()


@pytest.mark.parametrize('class_names, match', [
    ('dog', r"needs class names, one list per image, e.g. \[\['dog', 'person'\], \['cat'\]\]; "
            r"got 'dog'"),
    (None, 'needs class names, one list per image'),
    (['dog', 'cat'], r"class names 'dog' is a string; class names are one list per image"),
    ([[12], [8]], r'class names are strings from .classes, got \[12\]; for dataset indices pass '
                  r'\[generator.classes\[i\] for i in indices\]'),
    ([['dog']], 'needs the class names of each of the 2 images, got 1 lists'),
    ([['dgo'], ['cat']], r"unknown class name\(s\) \['dgo'\] \('dgo': did you mean 'dog'\?\)"),
])
def test_class_name_mistakes_are_named_with_the_fix(class_names, match, two_images):
    with pytest.raises((ValueError, KeyError), match=match):
        generators()[1](two_images[0], None, class_names)


def test_images_without_image_level_labels_are_all_background(two_images):
    """iSeg with no foreground class in the whole batch labels every pixel background (the
    released loop over classes draws no map)."""
    labels = generators()[1](two_images[0], None, [[], ['background']])
    assert labels.shape == (2, 64, 64)
    assert set(labels.unique().tolist()) == {VOC.index('background')}


def test_a_generator_without_classes_cannot_map_names():
    with pytest.raises(ValueError, match=r"DiffSeg was built without `classes`, so class names "
                                         r"\['dog'\] cannot be mapped to label indices"):
        DiffSeg().class_indices(['dog'])


def test_an_unknown_option_names_the_generator_and_the_nearest_option():
    for build in (lambda: MASK_GENERATORS.build(dict(type='ISeg', iter=3)),
                  lambda: ISeg(iter=3)):
        with pytest.raises(TypeError, match=r"ISeg: unknown option 'iter' \(did you mean "
                                            r"'iters'\?\); its options: classes, vocabulary"):
            build()
    with pytest.raises(TypeError, match=r"DiffSeg: unknown option 'kl_threshold' \(did you mean "
                                        r"'kl_thresholds'\?\)"):
        MASK_GENERATORS.build(dict(type='DiffSeg', kl_threshold=1.0))
    assert MASK_GENERATORS.build(dict(type='ISeg', preset='wsss_voc', iters=2)).iters == 2


class WithoutConfigDict(MaskGenerator):
    """A custom generator that leaves out config_dict."""

    @property
    def capture_spec(self):
        return CaptureSpec((CaptureRequest('self', 8),))

    def extract_kwargs(self, class_names):
        return {}


def test_a_generator_without_config_dict_says_what_to_return():
    """repr() (a notebook showing it) and the label cache raised a bare NotImplementedError."""
    generator = WithoutConfigDict()
    assert repr(generator) == 'WithoutConfigDict()'
    with pytest.raises(NotImplementedError, match=r'WithoutConfigDict.config_dict\(\) is not '
                                                  'defined: return a dict of every option'):
        generator.config_dict()


def test_pre_flight_names_a_missing_config_dict():
    """Pre-flight said "can train here", then the label cache failed at its first label."""
    from mmdiffseg import preflight
    [missing] = preflight.check_generator(dict(type=WithoutConfigDict), 'cache.generator')
    assert 'WithoutConfigDict.config_dict() is not defined' in missing.what


def test_the_online_labeler_warns_what_of_its_generator_misfits_the_model(monkeypatch):
    """SeeDiff's num_heads against another model's heads was logged by the tools only; training
    and prefill load their engine through the labeler."""
    import mmengine.logging
    from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
    from mmdiffseg.generators import SeeDiff
    from mmdiffseg.models.online_labeler import AttentionLabeler
    logged = []
    monkeypatch.setattr(mmengine.logging, 'print_log', lambda msg, **kw: logged.append(msg))
    folder = cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    AttentionLabeler(str(folder), SeeDiff(classes=['background', 'dog'])).load_engine('cpu')
    assert any('SeeDiff: num_heads=8 but' in msg for msg in logged), logged


def test_num_heads_that_do_not_fit_the_model_are_named_with_the_fix(monkeypatch):
    """The released flat-layer test sums SD 1.4's 8 heads: on a U-Net with other head counts at
    16x16 (SD 2.x: 20; the tiny test model: its own) the tools log the setting that fits, as a
    warning whose text is the note (once read 'WARNING - warning: SeeDiff: ...')."""
    import logging

    import mmengine.logging
    logged = []
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda msg, logger=None, level=logging.INFO: logged.append((msg, level)))
    from mmdiffseg.apis.builders import warn_model_notes
    from mmdiffseg.attention.testing import tiny_engine
    from mmdiffseg.attention.unet_layers import AttentionLayer
    sd14 = [AttentionLayer(f'l{i}', kind, 16, 8) for i, kind in enumerate(('self', 'cross'))]
    sd21 = [AttentionLayer('c', 'cross', 16, 20), AttentionLayer('s', 'self', 16, 5)]
    seediff = SeeDiff(classes=['background', 'dog'])
    assert seediff.model_notes(sd14) == []
    [note] = seediff.model_notes(sd21)
    assert 'num_heads=8' in note and '20 heads' in note and '--cfg-options num_heads=20' in note
    assert SeeDiff(classes=['background', 'dog'], num_heads=20).model_notes(sd21) == []
    assert warn_model_notes(tiny_engine(shared_path('sd_configs', 'stable-diffusion-v1-4')),
                            seediff, 512) == []                  # 8 heads, as SD 1.4
    [note] = warn_model_notes(tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base')),
                              seediff, 512)                      # the tiny SD 2.1: 4 at 16x16
    assert 'have 4 heads' in note and 'num_heads=4' in note
    assert logged == [(note, logging.WARNING)] and note.startswith('SeeDiff: num_heads=8 but ')


def test_ignore_index_takes_any_label_after_the_classes():
    """Unsure pixels may take the first label past the classes (not one of theirs); without a
    class named background, background pixels get that label too."""
    generator = MaskGenerator(['cat', 'dog'], ignore_index=2)
    assert generator.ignore_index == 2 and generator.background_index == 2
    assert MaskGenerator(['cat', 'background'], ignore_index=7).background_index == 1
    with pytest.raises(ValueError, match=r"^MaskGenerator: ignore_index=1 is the label of class "
                                         r"'dog'; unsure pixels need a label of their own, from 2 "
                                         r"to 255 \(default 255\)$"):
        MaskGenerator(['cat', 'dog'], ignore_index=1)


def test_class_name_errors_hint_only_what_applies():
    """numpy ints get the indices hint; a name with no near class gets no "did you mean"."""
    generator = MaskGenerator(['cat', 'dog'])
    with pytest.raises(ValueError, match='12.*; for dataset indices pass'):
        generator.class_indices([np.int64(12)])
    with pytest.raises(KeyError) as error:
        generator.class_indices(['cat', 'xyzzy'])
    assert error.value.args[0] == ("MaskGenerator: unknown class name(s) ['xyzzy']; "
                                   "known classes: ['cat', 'dog']")
    assert generator.class_indices(['dog', 'cat']) == [1, 0]


class FixedLabels(MaskGenerator):
    """Returns the labels it was given, whatever the maps."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def forward(self, maps, images, class_names):
        self.images = images
        return self.labels


def test_labels_at_resizes_by_the_nearest_pixel_centre():
    """Two columns to three: pixel centres 1/3, 1, 5/3 of the old width read columns 0, 1, 1
    (torch's plain 'nearest' reads 0, 0, 1)."""
    generator = FixedLabels(torch.tensor([[[0, 1]], [[2, 3]]]))
    maps = SimpleNamespace(batch_size=2)
    small, same = generator.labels_at(maps, None, None, [(1, 3), (1, 2)])
    assert small.tolist() == [[0, 1, 1]] and same.tolist() == [[2, 3]]


def test_images_of_one_size_are_grouped_in_order_of_first_appearance():
    assert size_groups([(2, 3), torch.tensor([4, 5]), (2, 3)]) == {(2, 3): [0, 2], (4, 5): [1]}


def test_the_older_labels_note_is_given_only_for_a_labels_version_difference():
    assert older_labels_note([('timestep', 100, 50)]) == ''
    note = older_labels_note([('timestep', 100, 50), ('labels_version', 3, LABELS_VERSION)])
    assert note.startswith('\nlabels_version: its labels were made by an earlier mmdiffseg')
    assert note.endswith(f'are not mixed with version {LABELS_VERSION} labels.')


def test_isegs_labels_of_float32_maps_made_before_the_option_name_how_to_keep_them():
    """A cache or folder of iSeg labels made before map_precision (float32 maps, not recorded)
    was refused naming only 'generator.map_precision: <absent> / "float16"'."""
    from mmdiffseg.provenance import ABSENT
    note = older_labels_note([('generator.map_precision', ABSENT, 'float16')])
    assert note == ("\ngenerator.map_precision: its labels are iSeg's of float32 maps, made before "
                    'float16 maps (as released) became the default; to go on with them, set the '
                    "generator's map_precision='float32'.")
    assert older_labels_note([('generator.map_precision', 'float16', ABSENT)]) == ''


def test_a_uint8_image_batch_reaches_forward_as_float():
    """The tools' uint8 batches are handed to forward as float (0..255), as it documents."""
    generator = FixedLabels(torch.zeros(1, 2, 2, dtype=torch.long))
    images = torch.full((1, 3, 2, 2), 200, dtype=torch.uint8)
    generator(SimpleNamespace(batch_size=1), images, None)
    assert generator.images.dtype == torch.float32 and generator.images.max().item() == 200.0


def test_diffseg_labelled_or_at_a_fixed_size_resizes_its_labels_at_each_size(two_images):
    """Labelled DiffSeg's labels_at gives class indices (its segment ids named), and DiffSeg with
    an ``output_size`` gives its labels made at that size, resized by the nearest pixel; the
    unsupervised proposals' argmax at each size is for neither."""
    maps, names = two_images
    labelled = DiffSeg(classes=VOC, kl_thresholds=(1.1,) * 3, cross_resolutions=(16,),
                       merge_precision='float32')
    dog, cat = VOC.index('dog'), VOC.index('cat')
    for label, size in zip(labelled.labels_at(maps, None, names, [(8, 8), (4, 6)]),
                           [(8, 8), (4, 6)]):
        assert tuple(label.shape) == size and set(label.unique().tolist()) <= {0, dog, cat}
        assert label.max() in (dog, cat)
    fixed = DiffSeg(kl_thresholds=(1.1,) * 3, merge_precision='float32', output_size=(4, 4))
    at_4 = fixed(maps, None, None)
    got = fixed.labels_at(maps, None, None, [(8, 8), (4, 4)])
    assert torch.equal(got[0], at_4[0].repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert torch.equal(got[1], at_4[1])


def test_isegs_cross_maps_of_another_grid_are_named():
    """A cross-attention map whose rows are not the r x r grid its name says is refused naming
    the map and the shape expected."""
    maps, names = attention_from_labels(torch.zeros(2, 64, 64, dtype=torch.long), VOC,
                                        self_resolutions=(64,), cross_resolutions=(16, 32))
    maps.maps['iseg_self64'] = maps.maps['self64']
    maps.maps['iseg_cross32'] = maps.maps['cross32']
    maps.maps['iseg_cross16'] = maps.maps['cross32']  # 1024 rows where 16 x 16 = 256 belong
    iseg = ISeg(vocabulary='voc', cross_heads=None, self_heads=None, use_cluster=False)
    with pytest.raises(ValueError, match=r"ISeg: AttentionMaps\['iseg_cross16'\] must be "
                                         r"\(2, 256, tokens\), got \(2, 1024, 77\)"):
        iseg(maps, None, [['dog'], ['cat']])


def test_seediff_without_class_names_says_what_it_needs(two_images):
    """No names, or one string for the batch: the message every generator gives, with an
    example of one list per image."""
    for given in (None, 'cat'):
        with pytest.raises(ValueError, match=r"^SeeDiff needs class names, one list per image, "
                                             rf"e.g. \[\['dog', 'person'\], \['cat'\]\]; got "
                                             rf"{given!r}$"):
            SeeDiff(classes=VOC)(two_images[0], None, given)
