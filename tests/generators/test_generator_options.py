"""Generator options are read strictly: a value that would run but mean nothing is refused at
construction, naming the generator, the option and its range."""
import math

import pytest

from mmdiffseg.generators import DiffSeg, ISeg, SeeDiff
from mmdiffseg.options import check_flag, check_template, check_whole

VOC = ['background', 'cat', 'dog']


@pytest.mark.parametrize('build, match', [
    (lambda: DiffSeg(kl_thresholds=(0.0, 1.1)), r'kl_thresholds\[0\] must be a number > 0'),
    (lambda: DiffSeg(kl_thresholds=(math.nan,)), r'kl_thresholds\[0\] must be a number > 0'),
    (lambda: DiffSeg(kl_thresholds=1.1), r'kl_thresholds must be a list \(e.g. kl_thresholds='),
    (lambda: DiffSeg(kl_thresholds='abc'), 'kl_thresholds must be a list'),
    (lambda: DiffSeg(resolution_weights=(0, 0, 0, 0)), 'resolution_weights are all 0'),
    (lambda: DiffSeg(resolution_weights=(-1, 1, 1, 1)), r'resolution_weights\[0\] must be .*>= 0'),
    (lambda: DiffSeg(num_points=15.9), 'num_points must be a whole number in'),
    (lambda: DiffSeg(refine='False'), 'refine must be True or False'),
    (lambda: DiffSeg(output_size=(0, 0)), r'output_size\[0\] must be a whole number >= 1'),
    (lambda: DiffSeg(resolutions=(64, -32)), r'resolutions\[1\] must be a whole number >= 1'),
    (lambda: SeeDiff(VOC, threshold=-1), r'threshold must be a number in \(0, 1\)'),
    (lambda: SeeDiff(VOC, final_threshold=math.nan), 'final_threshold must be a number in'),
    (lambda: SeeDiff(VOC, alpha=0), r'alpha must be a number in \(0, 1\)'),
    # CA16 is min-max normalised, so CA16^2 > 1 is no pixel: every mask was empty, exit 0
    (lambda: SeeDiff(VOC, alpha=1.0), r'alpha must be a number in \(0, 1\), got 1.0'),
    (lambda: SeeDiff(VOC, noise='abc'), r"noise \(a seed\) must be a whole number \(finite\)"),
    # the seed failed torch.Generator after the model load
    (lambda: ISeg(noise_seed=2 ** 70), r'noise_seed must be a whole number in \[-2\*\*63, '
                                       r'2\*\*64 - 1\]'),
    # the k-means failed after the model load: it clusters the 64x64 self-attention grid
    (lambda: ISeg(num_clusters=5000), r'num_clusters must be a whole number in \[1, 4096\]'),
    # a None or a list was written into the prompt ('..., None')
    (lambda: ISeg(bg_context=None), "bg_context must be a string .*'' for none.*got None"),
    (lambda: ISeg(bg_context=['sky']), r"bg_context must be a string .*got \['sky'\]"),
    # a misspelt key left its class at its own name, unsaid
    (lambda: ISeg(prompt_names={'dgo': 'puppy'}), "prompt_names names 'dgo'.*did you mean 'dog'"),
    (lambda: ISeg(prompt_names={'dog': ''}), r"prompt_names\['dog'\] must be the words"),
    # head numbers were truncated (1.5 -> 1), an int was "'int' object is not iterable"
    (lambda: ISeg(cross_heads={16: [1.5]}), r'cross_heads\[16\]\[0\] must be a whole number'),
    (lambda: ISeg(cross_heads={16: 3}), r'cross_heads\[16\] must be a list \(e.g.'),
    (lambda: ISeg(cross_heads={16: []}), r'cross_heads\[16\] is empty'),
    (lambda: ISeg(res_weights=[0.7, 0.3]), r"res_weights must be \{resolution: weight\}, e.g. "
                                           r"\{16: 0.7, 32: 0.3\}"),
    # their sum scaled the KL distances: [8,4,2,1] (the default's ratios) gave 256 segments
    (lambda: DiffSeg(resolution_weights=(8, 4, 2, 1)),
     r'resolution_weights must sum to 1.*got \[8, 4, 2, 1\] \(sum 15\): pass '
     r'resolution_weights=\[0.5333,0.2667,0.1333,0.06667\]'),
    (lambda: SeeDiff(VOC, steps=0), 'steps must be a whole number >= 1'),
    (lambda: SeeDiff(VOC, prompt_templates=['a {x} {}']),
     r"prompt_templates 'a {x} {}': it must hold exactly one {} \(the class names\), it has 2"),
    (lambda: SeeDiff(VOC, token_offsets={'dgo': [0]}), "names 'dgo'.*did you mean 'dog'"),
    (lambda: SeeDiff(VOC, token_offsets={'cat': []}), r"token_offsets\['cat'\] is empty"),
    (lambda: SeeDiff(VOC + ['cat']), r"classes names \['cat'\] more than once"),
    (lambda: SeeDiff(VOC, ignore_index=0), "ignore_index=0 is the label of class 'background'"),
    (lambda: DiffSeg(classes=VOC, ignore_index=300), 'ignore_index must be a whole number in'),
    (lambda: ISeg(classes=VOC, vocabulary=None, ent=math.nan), 'ent must be a number >= 0'),
    (lambda: ISeg(classes=VOC, vocabulary=None, ent='abc'), 'ent must be a number >= 0'),
    (lambda: ISeg(classes=VOC, vocabulary=None, use_cluster='no'), 'use_cluster must be True'),
    (lambda: ISeg(classes=VOC, vocabulary=None, use_cluster=2), 'use_cluster must be True'),
    (lambda: ISeg(classes=VOC, vocabulary=None, prompt_template='{classes} and {classes}'),
     r'exactly one {classes} \(the class names\) and otherwise only {bg_context}, it has 2'),
    (lambda: SeeDiff(VOC, token_offsets={'cat': [0, -1]}),
     r"token_offsets\['cat'\]\[1\] must be a whole number >= 0"),
    (lambda: ISeg(classes=VOC, vocabulary=None, num_clusters=36.9), 'num_clusters must be a who'),
    (lambda: ISeg(classes=VOC, vocabulary=None, token_enhance=0), 'token_enhance must be a nu'),
    (lambda: ISeg(classes=VOC, vocabulary=None, mask_size=0), 'mask_size must be a whole number'),
    (lambda: ISeg(classes=VOC, vocabulary=None, prompt_template='{classes} {foo}'),
     r'exactly one {classes} \(the class names\) and otherwise only {bg_context}, it has 2'),
    (lambda: ISeg(classes=VOC, vocabulary=None, token_offsets={'cta': [0]}),
     "names 'cta'.*prompt words.*did you mean 'cat'"),
    (lambda: ISeg(vocabulary=None), 'ISeg needs `classes` when `vocabulary` is None'),
    (lambda: ISeg(token_table='coco'), "token_table must be one of .*got 'coco'"),
    (lambda: ISeg(res_weights={16: 0.7, 64: 0.3}), r'res_weights must weight resolutions \[16, '
                                                    r'32\] with non-negative weights'),
    (lambda: ISeg(res_weights={16: 0, 32: 0}), 'not all zero'),
    (lambda: ISeg(res_weights={16: 1.2, 32: -0.2}), 'non-negative weights'),
    (lambda: ISeg(self_heads=[]), r'self_heads must name at least one head \(None = all heads\)'),
    (lambda: SeeDiff(None), 'SeeDiff needs `classes`'),
    (lambda: SeeDiff(VOC, seed_rule='kmeans'), "seed_rule must be one of .*got 'kmeans'"),
    (lambda: SeeDiff(VOC, prompt_templates=[]), 'prompt_templates must be a non-empty list'),
    (lambda: SeeDiff(VOC, prompt_templates={'cat': 'a {}'}), 'must be a non-empty list'),
    (lambda: DiffSeg(classes='cat,dog'), r"classes must be a list of class names \(non-empty "
                                         r"strings\), got 'cat,dog'"),
    (lambda: DiffSeg(classes=['cat', ' ']), 'classes must be a list of class names'),
    (lambda: DiffSeg(classes=[]), "DiffSeg: classes is empty, so every label would be unsure: "
                                  "list the dataset's class names"),
    (lambda: ISeg(classes=[], vocabulary=None), 'ISeg: classes is empty'),
    (lambda: SeeDiff([]), 'SeeDiff: classes is empty'),
    (lambda: DiffSeg(output_size=(64, 64, 3)), r'output_size must be \[height, width\] or None'),
    (lambda: DiffSeg(timestep=-1), 'timestep must be a whole number >= 0, got -1'),
    (lambda: DiffSeg(resolutions=()), 'DiffSeg.resolutions must hold at least one resolution'),
    (lambda: DiffSeg(num_points=1), r'num_points must be a whole number in \[2, 64\], got 1'),
    (lambda: SeeDiff(VOC, threshold=1), r'threshold must be a number in \(0, 1\), got 1'),
    (lambda: SeeDiff(VOC, final_threshold=1), r'final_threshold must be a number in \(0, 1\)'),
    (lambda: ISeg(timestep=-1), 'timestep must be a whole number >= 0'),
    (lambda: ISeg(num_clusters=0), r'num_clusters must be a whole number in \[1, 4096\]'),
    (lambda: ISeg(cluster_iters=0), 'cluster_iters must be a whole number >= 1'),
    (lambda: ISeg(iters=-1), 'iters must be a whole number >= 0'),
    (lambda: ISeg(cam_bg_thr=1.0), r'cam_bg_thr must be a number in \[0, 1\)'),
    (lambda: ISeg(cam_bg_thr=-0.1), r'cam_bg_thr must be a number in \[0, 1\)'),
    (lambda: ISeg(kmeans_precision='half'), "kmeans_precision must be one of .*got 'half'"),
    (lambda: ISeg(self_heads=[1, -1]), r'self_heads\[1\] must be a whole number >= 0'),
])
def test_a_meaningless_option_is_refused_naming_it_and_its_range(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_an_unknown_vocabulary_is_named_with_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown vocabulary 'vocc'; known: \[.*'voc'"):
        ISeg(vocabulary='vocc')


def test_a_single_prompt_template_string_is_one_template():
    assert SeeDiff(VOC, prompt_templates='a picture of a {}').prompt_templates == [
        'a picture of a {}']


def test_the_checks_keep_good_values_in_their_types():
    assert check_whole('G', 'n', 36.0) == 36 and isinstance(check_whole('G', 'n', 36.0), int)
    assert check_flag('G', 'f', 1) is True and check_flag('G', 'f', False) is False
    with pytest.raises(ValueError, match='n must be a whole number'):
        check_whole('G', 'n', True)  # a bool is no count
    assert check_template('G', 't', 'a {{x}} {}', '') == 'a {{x}} {}'  # escaped braces
    gen = ISeg(classes=VOC, vocabulary=None, token_offsets={'cat': [0.0]}, num_clusters=36.0)
    assert gen.token_offsets['cat'] == [0] and gen.num_clusters == 36
    assert SeeDiff(VOC, alpha=0.99, threshold=0.5).threshold == 0.5
    assert ISeg(noise_seed=2 ** 64 - 1).noise_seed == 2 ** 64 - 1
    assert ISeg(noise_seed=-1).noise_seed == -1   # torch takes it (as 2**64 - 1); so did we
    thirds = DiffSeg(resolution_weights=[1 / 3] * 3, resolutions=[64, 32, 16])  # sum 1 - 1e-16
    assert thirds.resolution_weights == (1 / 3,) * 3
    # the weights the refusal suggests, as printed (4 digits), are taken
    DiffSeg(resolution_weights=[0.5333, 0.2667, 0.1333, 0.06667])
    DiffSeg(resolution_weights=[0.3333] * 3, resolutions=[64, 32, 16])
    # a recorded config's prompt words (the vocabulary's, for all its classes) are taken
    subset = ISeg(vocabulary='voc', classes=['background', 'cat', 'dog'])
    recorded = subset.config_dict()['prompt_names']
    assert 'pottedplant' in recorded
    assert ISeg(vocabulary='voc', classes=['background', 'cat', 'dog'],
                prompt_names=recorded).prompt_names == subset.prompt_names
    import numpy as np
    import torch
    from_arrays = DiffSeg(kl_thresholds=np.full(3, 1.1), resolutions=torch.tensor([64, 32, 16, 8]),
                          num_points=np.array(16), min_contrast=torch.tensor(2.0))
    assert from_arrays.kl_thresholds == (1.1,) * 3 and from_arrays.num_points == 16
    assert ISeg(classes=VOC, vocabulary=None, self_heads=np.array([1, 2])).self_heads == (1, 2)


def test_a_bound_is_applied_and_written_as_open_or_closed():
    """The boundary value passes a closed bound and fails an open one; the message writes the
    bound the check applied."""
    from mmdiffseg.options import check_real
    assert check_real('G', 'x', 1, high=1) == 1.0 and check_real('G', 'x', 0, low=0) == 0.0
    with pytest.raises(ValueError, match=r'^G: x must be a number < 1, got 1$'):
        check_real('G', 'x', 1, high=1, high_open=True)
    with pytest.raises(ValueError, match=r'^G: x must be a number <= 1, got 1.5$'):
        check_real('G', 'x', 1.5, high=1)
    with pytest.raises(ValueError, match=r'^G: x must be a number in \[0, 1\), got 1$'):
        check_real('G', 'x', 1, low=0, high=1, high_open=True)
    assert check_whole('G', 'n', 1, low=1, high=1) == 1


def test_a_real_option_given_as_an_int_is_kept_as_a_float():
    """``--cfg-options alpha=1`` gives an int: the option holds the float (cache keys and
    manifests record it as 1.0, as a config writing 1.0 does)."""
    from mmdiffseg.options import check_real, check_reals
    value = check_real('G', 'x', 3)
    assert value == 3.0 and type(value) is float
    assert [type(v) for v in check_reals('G', 'xs', [1, 2.5], '[1.0]')] == [float, float]


@pytest.mark.parametrize('build, option, value', [
    (ISeg, 'iters', -1), (ISeg, 'postprocess_backend', 'graph'), (DiffSeg, 'kl_thresholds', [1]),
    (lambda: SeeDiff(['cat']), 'pamr_iter', 0), (lambda: ISeg(preset='wsss_coco'), 'ent', 0.2)])
def test_an_option_changed_after_the_generator_is_built_is_refused(build, option, value):
    """``iseg.iters = -1`` ran unchecked and ``iseg.postprocess_backend = 'graph'`` did nothing
    (the backend became a helper in ``__init__``): now refused, naming how to build another;
    other attributes stay settable, and a copy keeps the options."""
    import copy
    gen = build()
    before = getattr(gen, option, None)
    with pytest.raises(AttributeError, match=rf"\.{option}: options are checked when the "
                                             rf'generator is built.*\(\.\.\., {option}='):
        setattr(gen, option, value)
    assert getattr(gen, option, None) == before
    gen.note = 'mine'
    assert copy.deepcopy(gen).note == 'mine'


def test_background_context_words_that_name_classes_are_warned_of(monkeypatch):
    """iSeg on Cityscapes with the VOC settings (no Cityscapes preset) prompted building, wall
    and sky as background words as well as classes, without a word; the presets' own words name
    none of their classes."""
    from mmdiffseg.datasets.class_names import DATASET_CLASSES
    from mmdiffseg.generators import iseg_presets
    logged = []
    monkeypatch.setattr(iseg_presets, 'print_log', lambda msg, **kwargs: logged.append(msg))
    ISeg(classes=list(DATASET_CLASSES['cityscapes']), vocabulary=None, cross_heads=None)
    assert logged == ["ISeg: the background-context words building, wall, sky (bg_context) name "
                      "classes of this label set: prompted as background they draw those "
                      "classes' attention (the presets' words suit VOC's and COCO's classes); "
                      "set bg_context='' (--cfg-options bg_context=''), as "
                      'configs/iseg/iseg_wsss_ade20k.py does for ADE20K']
    logged.clear()
    ISeg(classes=list(DATASET_CLASSES['cityscapes']), vocabulary=None, cross_heads=None,
         bg_context='')
    for preset in iseg_presets.ISEG_PRESETS:
        ISeg(preset=preset)
    assert logged == []
