"""The offline tools' inputs: ground truth read as its mmseg dataset reads it (ADE20K's
reduce_zero_label, Cityscapes' labelTrainIds / labelIds), and bad input or conflicting options
refused with one message and exit status 2, before any model is loaded (no model is needed:
a check that let the input through would reach the missing model and name it instead)."""
import importlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from e2e_helpers import load_tool
from mmdiffseg.apis.io import JobSummary, UserInputError
from sample_data import REPO, shared_path
from test_offline_tools import VOC, run_in_process

ADE = ('ade20k_val_samples',)
CITYSCAPES = ('cityscapes_val_sample',)
FRAME = 'frankfurt_000000_000294'
NO_MODEL = '/nonexistent/stable-diffusion'
#: the classes in ADE_val_00000001's annotation (values 1, 2, 3, 5, 7, 10, 18; 0 = "other")
ADE_1_CLASSES = ['wall', 'building', 'sky', 'tree', 'road', 'grass', 'plant']


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def read(path):
    return np.asarray(Image.open(path)).astype(np.int64)


def scores(tmp_path, *args):
    report = tmp_path / 'report.json'
    run_in_process('eval_labels', *args, '--out-json', report)
    return json.loads(report.read_text())


def test_ade20k_labels_are_scored_against_its_one_based_annotations(tmp_path):
    """Perfect 0-based labels made from the annotations score 100% (they scored 0.00 when the
    annotations' k was read as class k); the convention can be set either way by hand."""
    annotations = shared_path(*ADE, 'annotations')
    for path in annotations.glob('*.png'):
        gt = read(path)
        save(tmp_path / 'pred' / path.name, np.where(gt == 0, 255, gt - 1))
    report = scores(tmp_path, tmp_path / 'pred', '--gt', annotations, '--classes', 'ade20k')
    assert report['images'] == 3 and report['mIoU'] == 100.0
    assert report['per_class_iou']['tree'] == 100.0 and report['per_class_iou']['floor'] is None
    off = scores(tmp_path, tmp_path / 'pred', '--gt', annotations, '--classes', 'ade20k',
                 '--no-reduce-zero-label')
    assert off['mIoU'] < 5
    # any class list: value 0 "other", k = class k - 1
    save(tmp_path / 'gt' / 'x.png', [[0, 1, 2, 2]])
    save(tmp_path / 'labels' / 'x.png', [[255, 0, 1, 1]])
    report = scores(tmp_path, tmp_path / 'labels', '--gt', tmp_path / 'gt', '--classes', 'a,b',
                    '--reduce-zero-label')
    assert report['per_class_iou'] == {'a': 100.0, 'b': 100.0}
    # an annotation holding 150 (the last class, 1-based) read 0-based is refused, with the fix
    save(tmp_path / 'gt150' / 'x.png', [[0, 150, 3, 3]])
    save(tmp_path / 'pred150' / 'x.png', [[255, 149, 2, 2]])
    err = run_in_process('eval_labels', tmp_path / 'pred150', '--gt', tmp_path / 'gt150',
                         '--classes', 'ade20k', '--no-reduce-zero-label', expect=2)
    assert 'holds values [150] outside the 150 classes' in err and 'need --reduce-zero-label' in err
    assert scores(tmp_path, tmp_path / 'pred150', '--gt', tmp_path / 'gt150',
                  '--classes', 'ade20k')['mIoU'] == 100.0
    # the annotations scored against themselves: 100% (0.00 before: labels read 0-based)
    assert scores(tmp_path, annotations, '--gt', annotations, '--classes', 'ade20k')['mIoU'] \
        == 100.0
    save(tmp_path / 'raw150' / 'x.png', [[0, 150, 3, 3]])  # annotations copied: the hint
    err = run_in_process('eval_labels', tmp_path / 'raw150', '--gt', tmp_path / 'gt150',
                         '--classes', 'ade20k', expect=2)
    assert "labels in the ground truth's reduce_zero_label convention (0 = other, k = class k-1" \
        in err and 'need --labels-reduce-zero-label' in err
    assert scores(tmp_path, tmp_path / 'raw150', '--gt', tmp_path / 'gt150', '--classes', 'ade20k',
                  '--labels-reduce-zero-label')['mIoU'] == 100.0


@pytest.fixture
def captured_labels(monkeypatch):
    """The image-level labels tools/pseudo_label.py would label with (the job itself stubbed)."""
    api = importlib.import_module('mmdiffseg.apis.pseudo_label')  # the module, not the function
    seen = {}

    def job(items, out_dir, model, gen_cfg, classes, image_labels, **kwargs):
        seen.update(image_labels)
        return JobSummary(made=len(items))
    monkeypatch.setattr(api, 'pseudo_label', job)
    return seen


def test_labels_from_ade20k_ground_truth_name_the_right_classes(tmp_path, captured_labels):
    """--labels-from-gt on ADE20K's annotations (a folder, or a dataset config's ADE20KDataset)
    names tree, road, grass, not the classes one index further (floor, ceiling)."""
    images, annotations = shared_path(*ADE, 'images'), shared_path(*ADE, 'annotations')
    common = ['--model', NO_MODEL, '--device', 'cpu', '--out', tmp_path / 'out']
    run_in_process('pseudo_label', images, '--labels-from-gt', annotations, '--classes', 'ade20k',
                   *common)
    assert captured_labels['ADE_val_00000001'] == ADE_1_CLASSES
    assert len(captured_labels) == 3
    captured_labels.clear()
    config = tmp_path / 'ade.py'
    config.write_text(f'val_dataloader = dict(dataset=dict(type="ADE20KDataset", data_root='
                      f'{str(annotations.parent)!r}, data_prefix=dict(img_path="images", '
                      'seg_map_path="annotations")))\n')
    run_in_process('pseudo_label', '--dataset-config', config, '--split', 'val',
                   '--labels-from-gt', *common)
    assert captured_labels['ADE_val_00000001'] == ADE_1_CLASSES
    run_in_process('pseudo_label', images, '--labels-from-gt', annotations, '--classes', 'ade20k',
                   '--no-reduce-zero-label', *common)
    assert {'floor', 'ceiling'} <= set(captured_labels['ADE_val_00000001'])


def test_labels_from_cityscapes_ground_truth_read_its_train_ids(tmp_path, captured_labels):
    """An image folder with gtFine (sub-folders searched, <frame>_leftImg8bit paired with
    <frame>_gtFine_labelTrainIds.png), or a dataset config's CityscapesDataset."""
    root = shared_path(*CITYSCAPES)
    expected = ['road', 'sidewalk', 'building', 'fence', 'pole', 'traffic sign', 'vegetation',
                'sky', 'person', 'car']
    common = ['--model', NO_MODEL, '--device', 'cpu', '--out', tmp_path / 'out']
    run_in_process('pseudo_label', root / 'leftImg8bit/val/frankfurt', '--labels-from-gt',
                   root / 'gtFine', '--classes', 'cityscapes', *common)
    assert captured_labels == {f'{FRAME}_leftImg8bit': expected}
    captured_labels.clear()
    config = tmp_path / 'cityscapes.py'
    config.write_text(f'val_dataloader = dict(dataset=dict(type="CityscapesDataset", data_root='
                      f'{str(root)!r}, data_prefix=dict(img_path="leftImg8bit/val", '
                      'seg_map_path="gtFine/val")))\n')
    for gt_dir in ([], [root / 'gtFine']):
        run_in_process('pseudo_label', '--dataset-config', config, '--split', 'val',
                       '--labels-from-gt', *gt_dir, *common)
        assert captured_labels == {f'{FRAME}_leftImg8bit': expected}


def test_cityscapes_labels_pair_with_their_gtfine_files(tmp_path):
    """Labels named after the images (<frame>_leftImg8bit.png) are scored against
    gtFine/val/<city>/<frame>_gtFine_labelTrainIds.png; labelIds are refused as train ids with
    the fix, and read (labelId - 7) for the 27-class protocol."""
    gt_root = shared_path(*CITYSCAPES, 'gtFine')
    frame = gt_root / 'val' / 'frankfurt' / FRAME
    save(tmp_path / 'pred' / f'{FRAME}_leftImg8bit.png', read(f'{frame}_gtFine_labelTrainIds.png'))
    report = scores(tmp_path, tmp_path / 'pred', '--gt', gt_root, '--classes', 'cityscapes')
    assert report['images'] == 1 and report['mIoU'] == 100.0
    assert report['per_class_iou']['road'] == 100.0
    err = run_in_process('eval_labels', tmp_path / 'pred', '--gt', gt_root, '--classes',
                         'cityscapes', '--gt-suffix', '_gtFine_labelIds.png', expect=2)
    assert 'Cityscapes labelIds are not train ids' in err
    assert '--gt-suffix _gtFine_labelTrainIds.png' in err and 'cityscapes27' in err
    label_ids = read(f'{frame}_gtFine_labelIds.png')
    inside = (label_ids >= 7) & (label_ids < 34)
    save(tmp_path / 'seg' / f'{FRAME}_leftImg8bit.png',
         np.where(inside, 100 + (label_ids - 7) * 3, 255))  # unlabelled, renumbered segments
    report = scores(tmp_path, tmp_path / 'seg', '--gt', gt_root, '--classes', 'cityscapes27',
                    '--hungarian')
    assert report['mIoU'] == 100.0 and report['ACC'] == 100.0
    err = run_in_process('eval_labels', tmp_path / 'pred', '--gt', tmp_path, '--classes',
                         'cityscapes', expect=2)
    assert f"no ground truth for 1 label(s), e.g. ['{FRAME}_leftImg8bit']" in err
    assert f"'{FRAME}_gtFine_labelTrainIds.png'" in err


@pytest.fixture(scope='module')
def bad_pngs(tmp_path_factory):
    """VOC's label PNGs, and copies in which voc_val_1.png is cut short."""
    gt = shared_path(*VOC, 'SegmentationClass')
    folder = tmp_path_factory.mktemp('bad') / 'cut'
    folder.mkdir()
    for path in gt.glob('*.png'):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / 'voc_val_1.png').write_bytes((gt / 'voc_val_1.png').read_bytes()[:300])
    return gt, folder


def test_unreadable_labels_and_ground_truth_are_named(bad_pngs, tmp_path):
    gt, cut = bad_pngs
    rgb = shared_path(*VOC, 'JPEGImages')
    err = run_in_process('eval_labels', gt, '--gt', rgb, expect=2)
    assert 'ground truth' in err and 'voc_val_' in err and 'not colour images' in err
    err = run_in_process('eval_labels', cut, '--gt', gt, expect=2)
    assert f'cannot read label {cut / "voc_val_1.png"}' in err and 'damaged' in err
    err = run_in_process('eval_labels', gt, '--gt', cut, expect=2)
    assert f'cannot read ground truth {cut / "voc_val_1.png"}' in err
    err = run_in_process('eval_labels', gt, '--gt', cut, '--hungarian', expect=2)
    assert f'cannot read ground truth {cut / "voc_val_1.png"}' in err
    err = run_in_process('pseudo_label', shared_path(*VOC, 'JPEGImages'), '--labels-from-gt', cut,
                         '--classes', 'voc', '--model', NO_MODEL, '--device', 'cpu',
                         '--out', tmp_path / 'out', expect=2)
    assert f'cannot read ground truth {cut / "voc_val_1.png"}' in err and NO_MODEL not in err
    copied = tmp_path / 'copied'
    shutil.copytree(gt, copied)
    err = run_in_process('eval_labels', copied, '--gt', gt, '--classes', 'background,cat',
                         expect=2)
    assert 'outside the 2 classes of --classes' in err
    err = run_in_process('eval_labels', gt, '--gt', gt, '--classes', 'background,cat', expect=2)
    assert 'ground truth' in err and 'outside the 2 classes' in err  # itself: read as ground truth
    assert 'Traceback' not in err and not (tmp_path / 'out').exists()


def test_a_dataset_config_that_is_missing_broken_or_without_its_data(tmp_path, monkeypatch):
    """The VOC command of docs/data.md run where the data is not: the missing folders and files are
    named (it was a bare AssertionError)."""
    common = ['--labels-from-gt', '--model', NO_MODEL, '--device', 'cpu', '--out', tmp_path / 'o']
    err = run_in_process('pseudo_label', '--dataset-config', tmp_path / 'none.py', *common,
                         expect=2)
    assert f'dataset config {tmp_path / "none.py"} (--dataset-config) not found' in err
    (tmp_path / 'broken.py').write_text('train_dataloader = dict(\n')
    err = run_in_process('pseudo_label', '--dataset-config', tmp_path / 'broken.py', *common,
                         expect=2)
    assert 'cannot read dataset config' in err and 'SyntaxError' in err
    monkeypatch.chdir(tmp_path)
    config = REPO / 'configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'
    err = run_in_process('pseudo_label', '--dataset-config', config, '--split', 'train',
                         '--labels', 'image_labels.json', '--classes', 'voc', *common[1:],
                         expect=2)
    assert 'the train data of' in err and 'is not there' in err
    assert 'data root data/VOCdevkit/VOC2012 does not exist' in err and 'docs/data.md' in err
    # the pre-flight's 'of the entries above' named no entry here, and this tool's --cfg-options
    # are the generator's: the entry and the file to edit are named
    assert (f'; or set data_root (and data_prefix) of train_dataloader.dataset to where yours is, '
            f'in {config} or a config that inherits it)') in err and 'entries above' not in err
    err = run_in_process('pseudo_label', shared_path(*VOC, 'JPEGImages'), '--classes', 'voc',
                         *common, expect=2)
    assert '--labels-from-gt needs GT_DIR' in err
    # a config that trains on pseudo labels reads this tool's output: it was sent to run the
    # command that had just failed
    ade = REPO / 'configs/mask2former/mask2former_r50_8xb2-160k_ade20k-iseg-pseudo-512x512.py'
    err = run_in_process('pseudo_label', '--dataset-config', ade, '--labels', 'l.json',
                         *common[1:], expect=2)
    assert '(PseudoLabelADE20KDataset) reads the labels this tool makes' in err
    assert 'data/ade/ADEChallengeData2016/images/training' in err
    assert not (tmp_path / 'o').exists()


def test_generator_and_device_options_are_checked_first(tmp_path):
    images = shared_path(*VOC, 'JPEGImages')
    gt = shared_path(*VOC, 'SegmentationClass')
    common = [images, '--labels-from-gt', gt, '--classes', 'voc', '--model', NO_MODEL,
              '--out', tmp_path / 'out']
    (tmp_path / 'preset.py').write_text('generator = dict(type="ISeg"\n')
    err = run_in_process('pseudo_label', *common, '--device', 'cpu', '--config',
                         tmp_path / 'preset.py', expect=2)
    assert 'cannot read generator config' in err and 'SyntaxError' in err
    iseg = REPO / 'configs/iseg/iseg_wsss_voc.py'
    err = run_in_process('pseudo_label', *common, '--device', 'cpu', '--method', 'diffseg',
                         '--config', iseg, expect=2)
    assert 'asks for DiffSeg but the preset' in err and 'type ISeg' in err
    err = run_in_process('pseudo_label', *common, '--device', 'cpu', '--method', 'iseg',
                         '--config', iseg, expect=2)
    assert NO_MODEL in err  # the same generator: accepted, and on to the (missing) model
    err = run_in_process('pseudo_label', *common, '--device', 'gpu', expect=2)
    assert "--device 'gpu' is not a device: use cpu, cuda, cuda:N or auto" in err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('tool', ['pseudo_label', 'synthesize', 'segment'])
def test_a_launcher_without_its_starter_says_how_to_start(tool, tmp_path, monkeypatch):
    for name in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'):
        monkeypatch.delenv(name, raising=False)
    inputs = dict(pseudo_label=[shared_path(*VOC, 'JPEGImages'), '--labels-from-gt',
                                shared_path(*VOC, 'SegmentationClass'), '--classes', 'voc'],
                  synthesize=['--classes', 'cat,'], segment=[shared_path(*VOC, 'JPEGImages'),
                                                             '--classes', 'cat,'])[tool]
    err = run_in_process(tool, *inputs, '--launcher', 'pytorch', '--device', 'cpu', '--model',
                         NO_MODEL, '--out', tmp_path / 'out', expect=2)
    assert '--launcher pytorch but RANK' in err
    assert f'torchrun --nproc-per-node N tools/{tool}.py' in err and NO_MODEL not in err


def test_synthesize_refuses_bad_templates_and_generators_that_cannot_synthesise(tmp_path, capsys):
    common = ['--classes', 'cat,', '--model', NO_MODEL, '--device', 'cpu', '--out', tmp_path / 'o']
    for template, shown in (('a {} and a {}', '2 field(s)'), ('a {name}', "['{name}']"),
                            ('a photo', '0 field(s)'), ('a {', 'write literal braces')):
        err = run_in_process('synthesize', *common, '--prompt', template, expect=2)
        assert f'prompt template {template!r} (--prompt)' in err and shown in err
        assert NO_MODEL not in err
    err = run_in_process('synthesize', *common, '--cfg-options', "prompt_templates=['{} {}']",
                         expect=2)
    assert "prompt template '{} {}' (prompt_templates of --config" in err
    err = run_in_process('synthesize', *common, '--config', REPO / 'configs/iseg/iseg_wsss_voc.py',
                         expect=2)
    assert 'ISeg (the preset' in err and 'cannot synthesise' in err and 'SeeDiff' in err
    err = run_in_process('synthesize', *common, '--prompt', 'a {} in the {{snow}}', expect=2)
    assert NO_MODEL in err  # literal braces pass
    # both: --prompt won without a word
    err = run_in_process('synthesize', *common, '--prompt', 'a {}', '--cfg-options',
                         "prompt_templates=['a drawing of a {}']", expect=2)
    assert ('--prompt and --cfg-options prompt_templates=... both set the prompt templates: give '
            'them once (--prompt, repeated)') in err and NO_MODEL not in err
    with pytest.raises(SystemExit) as exit_info:
        load_tool('synthesize').parse_args(['--method', 'iseg', '--out', 'o'])
    assert exit_info.value.code == 2 and "choose from 'seediff'" in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


def test_segment_on_a_split_of_city_folders_says_how_to_take_them_all(tmp_path):
    """``segment.py leftImg8bit/val``: 'give one of them', without a way to label the split
    (segment.py has no --dataset-config)."""
    for city in ('frankfurt', 'lindau'):
        (tmp_path / 'val' / city).mkdir(parents=True)
        Image.new('RGB', (4, 4)).save(tmp_path / 'val' / city / f'{city}_0_leftImg8bit.png')
    err = run_in_process('segment', tmp_path / 'val', '--method', 'diffseg', '--model', NO_MODEL,
                         '--device', 'cpu', '--out', tmp_path / 'o', expect=2)
    assert ("its sub-folders ['frankfurt', 'lindau'] hold images (Cityscapes' cities): give one "
            'of them (one run per sub-folder, each with its own --out)') in err


def test_segment_refuses_empty_class_lists_sheet_sizes_and_input_with_a_sheet(tmp_path, capsys):
    image = shared_path(*VOC, 'JPEGImages', 'voc_val_0.png')
    err = run_in_process('segment', image, '--classes', 'background,', '--model', NO_MODEL,
                         '--device', 'cpu', '--out', tmp_path / 'o', expect=2)
    assert "--classes 'background,' names no class to look for" in err and NO_MODEL not in err
    for option in ('--cols', '--thumb', '--max-items'):
        with pytest.raises(SystemExit) as exit_info:
            load_tool('segment').parse_args(['--contact-sheet', 'F', option, '0'])
        assert exit_info.value.code == 2
        assert f"argument {option}: expected a positive integer, got '0'" in (
            capsys.readouterr().err)
    err = run_in_process('segment', image, '--contact-sheet', tmp_path, '--device', 'cpu',
                         expect=2)
    assert 'or --contact-sheet FOLDER' in err and 'not both' in err
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'contact_sheet.jpg').exists()


def test_an_empty_class_name_is_refused_before_the_model_loads(tmp_path):
    """An empty or blank name in a class list is refused, naming its position (it was dropped
    unseen: "cat,,dog" ran as cat, dog); one trailing comma still ends a list ("cat,")."""
    image = shared_path(*VOC, 'JPEGImages', 'voc_val_0.png')
    out = tmp_path / 'o'
    model = ['--model', NO_MODEL, '--device', 'cpu', '--out', out]
    runs = [('segment', [image, '--classes'], 'cat,,dog', 'name 2 is empty'),
            ('segment', [image, '--classes'], ',cat', 'name 1 is empty'),
            ('pseudo_label', [image.parent, '--method', 'diffseg', '--classes'], 'cat,,',
             'name 2 is empty'),
            ('synthesize', ['--classes', 'cat,', '--label-set'], 'cat, ,dog',
             "name 2 is blank (' ')")]
    for tool, args, value, problem in runs:
        err = run_in_process(tool, *args, value, *model, expect=2)
        option = args[-1]
        assert (f"error: {option} {value!r}: {problem}; separate names with single commas, e.g. "
                f"{option} cat,dog (one class: {option} cat,)\n") in err
        assert NO_MODEL not in err
    err = run_in_process('eval_labels', tmp_path, '--gt', tmp_path, '--classes', 'a,,b', expect=2)
    assert "--classes 'a,,b': name 2 is empty" in err
    assert not out.exists()
    err = run_in_process('segment', image, '--classes', 'cat,', *model, expect=2)
    assert NO_MODEL in err  # the one-class list passes


def test_prefill_refuses_bad_arguments_before_reading_the_config(tmp_path, capsys):
    """A misspelt config path, device, worker or batch count: one usage line and status 2
    (they were tracebacks, or a batch size of 0 silently replaced by the config's)."""
    config = str(REPO / 'configs/mask2former/mask2former_tiny-cpu_voc12-iseg-online-128x128.py')
    prefill = load_tool('prefill_labels')
    for args, message in (([str(tmp_path / 'nope.py')], 'nope.py not found'),
                          ([config, '--device', 'gpu'], "--device 'gpu' is not a device"),
                          ([config, '--workers', '-1'], "expected a non-negative integer, got '-1'"),
                          ([config, '--batch-size', '0'], "expected a positive integer, got '0'")):
        with pytest.raises(SystemExit) as exit_info:
            prefill.parse_args(args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert prefill.parse_args([config, '--workers', '0', '--batch-size', '3']).workers == 0


@pytest.mark.parametrize('tool', ['train', 'test', 'prefill_labels'])
def test_a_config_path_that_is_no_file_is_named_with_the_nearest_configs(tool, tmp_path, capsys):
    """A misspelt config path was a FileNotFoundError traceback from mmengine: now one usage line,
    status 2, with the nearest config names of its folder; a folder or a missing folder is said."""
    configs = REPO / 'configs/mask2former'
    main = configs / 'mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'
    parse = load_tool(tool).parse_args
    for given, message in (
            (str(main).replace('512x512', '512x51'), f'not found; did you mean {main} or '),
            (str(tmp_path / 'nope.py'), f'config file {tmp_path}/nope.py not found\n'),
            (str(tmp_path / 'no' / 'cfg.py'), f'not found: there is no folder {tmp_path}/no'),
            (str(configs), f'{configs} is a folder: give one config file (.py) in it')):
        with pytest.raises(SystemExit) as exit_info:
            parse([given])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert parse([str(main)]).config == str(main)


def test_ade20k_bed_is_named_without_mmsegs_trailing_space(tmp_path):
    """mmseg's ADE20K spells a class 'bed ': 'bed' was refused by synthesize.py (the listed name
    looked the same) and in --labels files; names that differ only by surrounding spaces now
    take the dataset's spelling, other names are still refused."""
    from mmdiffseg.datasets.class_names import DATASET_CLASSES, spelled_as
    ade = DATASET_CLASSES['ade20k']
    assert 'bed ' in ade and spelled_as(['bed', ' car', 'bad'], ade) == ['bed ', 'car', 'bad']
    common = ['--label-set', 'ade20k', '--model', NO_MODEL, '--device', 'cpu',
              '--out', tmp_path / 'o']
    assert NO_MODEL in run_in_process('synthesize', '--classes', 'bed,car', *common, expect=2)
    err = run_in_process('synthesize', '--classes', 'bedd,car', *common, expect=2)
    assert "--classes ['bedd'] not in --label-set" in err


def test_synthesize_takes_ade20ks_150_classes_into_its_own_label_set(monkeypatch, tmp_path):
    """The ADE20K synthetic config's data had no command: --classes ade20k was no class set."""
    api = importlib.import_module('mmdiffseg.apis.synthesize')
    seen = {}
    monkeypatch.setattr(api, 'synthesize', lambda names, out, model, gen_cfg, label_set=None,
                        **kwargs: seen.update(names=names, label_set=label_set) or JobSummary())
    load_tool('synthesize').main(['--classes', 'ade20k', '--device', 'cpu',
                                  '--out', str(tmp_path / 'o')])
    from mmdiffseg.datasets.class_names import DATASET_CLASSES
    assert seen['names'] == seen['label_set'] == list(DATASET_CLASSES['ade20k'])


def test_a_tool_option_given_as_a_generator_option_names_the_flag(tmp_path):
    """``--cfg-options dtype=float16`` (the generator's options) was 'unknown option' of iSeg,
    without the flag meant; an option a generator has under such a name stays its own."""
    from mmdiffseg.apis.builders import TOOL_OPTIONS, generator_config
    assert set(TOOL_OPTIONS) >= {'model', 'variant', 'device', 'dtype', 'batch_size', 'workers',
                                 'out'}
    for key in TOOL_OPTIONS:
        with pytest.raises(UserInputError) as refused:
            generator_config('iseg', None, {key: 'x'})
        flag = key.replace('_', '-')
        assert str(refused.value) == (f"--cfg-options {key}=... sets a generator option, and ISeg "
                                      f"has none named {key!r}: give the tool's own --{flag} "
                                      'instead')
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.png')
    err = run_in_process('segment', tmp_path, '--method', 'diffseg', '--cfg-options',
                         'dtype=float16', '--out', tmp_path / 'out', expect=2)
    assert "DiffSeg has none named 'dtype': give the tool's own --dtype instead" in err
    assert generator_config('seediff', None, {'num_heads': 8})[0]['num_heads'] == 8
