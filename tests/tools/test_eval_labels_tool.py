"""tools/eval_labels.py: scores on VOC ground truth and a hand-computed case, valid JSON, and the
refusal of label folders made for other classes."""
import json

import numpy as np
import torch
import pytest
from PIL import Image

from e2e_helpers import load_tool
from sample_data import shared_path
from test_offline_tools import VOC, run_in_process, run_tool


def _write_labels(folder, arrays):
    folder.mkdir(parents=True)
    for name, array in arrays.items():
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(folder / f'{name}.png')


def test_eval_labels_on_voc_ground_truth_and_hand_computed_case(tmp_path):
    gt = shared_path(*VOC, 'SegmentationClass')
    result = run_tool('eval_labels', gt, '--gt', gt, '--out-json', tmp_path / 'voc.json')
    report = json.loads((tmp_path / 'voc.json').read_text())
    arrays = [np.array(Image.open(p)) for p in gt.glob('*.png')]
    labelled = sum((a != 255).sum() for a in arrays) / sum(a.size for a in arrays)
    assert report['mIoU'] == 100.0 and report['images'] == 10
    assert report['coverage'] == pytest.approx(100 * labelled, abs=0.01)
    assert 'prefix is not set' not in result.stdout + result.stderr  # mmengine's notice, each run
    assert report['per_class_iou']['sheep'] == 100.0 and report['per_class_iou']['sofa'] is None
    assert '| sheep | 100.00 |' in result.stdout and '| sofa | n/a |' in result.stdout
    # a progress line (a log file: its first and last lines), not minutes of silence
    assert result.stdout.startswith('progress: 0/10\n')
    assert '\nprogress: 10/10 (100.0%)' in result.stdout

    def refuse_nan(name):
        raise ValueError(f'{name} is not JSON')
    json.loads((tmp_path / 'voc.json').read_text(), parse_constant=refuse_nan)  # strict JSON

    # 2 images of 4x4: background 0, class 1 ("a"), class 2 ("b"), 255 = ignore / unsure
    g1 = [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 255]]
    p1 = [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 255, 255]]
    g2 = [[2, 2, 0, 0]] * 4
    p2 = [[2, 0, 0, 0]] * 4
    _write_labels(tmp_path / 'gt', dict(i1=g1, i2=g2))
    _write_labels(tmp_path / 'pred', dict(i1=p1, i2=p2))
    run_in_process('eval_labels', tmp_path / 'pred', '--gt', tmp_path / 'gt', '--classes',
                   'background,a,b', '--out-json', tmp_path / 'hand.json')
    report = json.loads((tmp_path / 'hand.json').read_text())
    # a: GT 8 px, predicted 8 px, 4 right -> 4 / 12; b: GT 8, predicted 4, 4 right -> 4 / 8;
    # background (labelled pixels): GT 7 + 8, predicted 6 + 12, right 2 + 8 -> 10 / 23
    expected = dict(background=100 * 10 / 23, a=100 / 3, b=50.0)
    assert report['per_class_iou'] == pytest.approx(expected, abs=0.01)
    assert report['mIoU'] == pytest.approx(sum(expected.values()) / 3, abs=0.01)
    assert report['coverage'] == pytest.approx(100 * 30 / 32)

    # unlabelled segments: ids permuted per image -> Hungarian matching recovers them
    _write_labels(tmp_path / 'seg', dict(i1=np.where(np.array(g1) == 255, 7, np.array(g1) + 5),
                                         i2=np.array(g2) * 3))
    run_in_process('eval_labels', tmp_path / 'seg', '--gt', tmp_path / 'gt', '--classes',
                   'background,a,b', '--hungarian', '--out-json', tmp_path / 'hung.json')
    report = json.loads((tmp_path / 'hung.json').read_text())
    assert report['mIoU'] == 100.0 and report['ACC'] == 100.0


def test_eval_labels_refuses_labels_made_for_other_classes(tmp_path):
    """A folder whose manifest says its labels index person/aeroplane is not scored as VOC (the
    silent mIoU of 9.36 of issue 10); unlabelled segments need --hungarian; no manifest: scored
    as --classes says."""
    gt = shared_path(*VOC, 'SegmentationClass')
    folder = tmp_path / 'pl'
    (folder / 'SegmentationClass').mkdir(parents=True)
    for path in sorted(gt.glob('*.png'))[:2]:
        (folder / 'SegmentationClass' / path.name).write_bytes(path.read_bytes())
    header = dict(tool='pseudo_label', manifest='mmdiffseg', classes=['person', 'aeroplane'])
    (folder / 'manifest.jsonl').write_text(json.dumps(header) + '\n')
    for labels in (folder, folder / 'SegmentationClass'):
        err = run_in_process('eval_labels', labels, '--gt', gt, expect=2)
        assert "index the classes ['person', 'aeroplane'] (their manifest)" in err
        assert "scored as ['background', 'aeroplane'," in err
    run_in_process('eval_labels', folder, '--gt', gt, '--classes', 'person,aeroplane')
    (folder / 'manifest.jsonl').write_text(json.dumps(dict(header, classes=None)) + '\n')
    err = run_in_process('eval_labels', folder, '--gt', gt, expect=2)
    assert 'unlabelled segment ids' in err and '--hungarian' in err
    run_in_process('eval_labels', folder, '--gt', gt, '--hungarian')
    (folder / 'manifest.jsonl').unlink()
    assert 'mIoU: 100.00' in run_in_process('eval_labels', folder, '--gt', gt)


def test_ade20k_predictions_written_by_mmseg_are_read_with_labels_reduce_zero_label(
        tmp_path, capsys):
    """tools/test.py --out on ADE20K: mmseg's IoUMetric writes prediction k as k + 1. Scored as
    class indices they are shifted one class (the note says so); --labels-reduce-zero-label reads
    them as written. The ground truth: ADE20K's convention (0 = other, k = class k-1)."""
    import torch
    from mmseg.evaluation import IoUMetric

    from mmdiffseg.datasets.class_names import resolve_classes
    classes = resolve_classes('ade20k')
    rng = np.random.default_rng(0)
    gt_files = {f'ADE_val_{i}': rng.integers(0, 150, size=(8, 8)) for i in range(2)}  # no 150
    _write_labels(tmp_path / 'gt', gt_files)
    metric = IoUMetric(output_dir=str(tmp_path / 'out'), format_only=True)
    metric.dataset_meta = dict(classes=classes)
    for name, raw in gt_files.items():  # a perfect model: predicts each pixel's class
        predicted = np.where(raw == 0, 0, raw - 1)  # "other" pixels predicted as class 0
        metric.process({}, [dict(pred_sem_seg=dict(data=torch.from_numpy(predicted)[None]),
                                 img_path=f'{name}.jpg', reduce_zero_label=True)])
    written = {p.stem: np.array(Image.open(p)) for p in (tmp_path / 'out').glob('*.png')}
    assert written.keys() == gt_files.keys() and written['ADE_val_0'].max() <= 150

    shifted = run_in_process('eval_labels', tmp_path / 'out', '--gt', tmp_path / 'gt',
                             '--classes', 'ade20k', '--out-json', tmp_path / 'shifted.json')
    assert '--labels-reduce-zero-label' in shifted and '(no manifest)' in shifted
    assert json.loads((tmp_path / 'shifted.json').read_text())['aAcc'] < 10
    read = run_in_process('eval_labels', tmp_path / 'out', '--gt', tmp_path / 'gt', '--classes',
                          'ade20k', '--labels-reduce-zero-label', '--out-json', tmp_path / 'r.json')
    assert 'no manifest' not in read
    report = json.loads((tmp_path / 'r.json').read_text())
    assert report['aAcc'] == 100.0 and report['mIoU'] == 100.0

    header = dict(tool='pseudo_label', manifest='mmdiffseg', classes=classes)
    (tmp_path / 'out' / 'manifest.jsonl').write_text(json.dumps(header) + '\n')
    err = run_in_process('eval_labels', tmp_path / 'out', '--gt', tmp_path / 'gt', '--classes',
                         'ade20k', '--labels-reduce-zero-label', expect=2)
    assert 'written by pseudo_label as class indices' in err
    with pytest.raises(SystemExit) as exit_info:
        load_tool('eval_labels').parse_args(['L', '--gt', 'G', '--hungarian',
                                             '--labels-reduce-zero-label'])
    assert exit_info.value.code == 2
    assert '--hungarian scores unlabelled segment ids' in capsys.readouterr().err


def test_cocostuff_own_label_maps_are_read_into_27_classes_with_fine_labels(tmp_path):
    """COCO-Stuff's stuffthingmaps (fine id - 1; 'other' stuff and unlabelled: no coarse class)
    as COCOStuff27Dataset(fine_labels=True) reads them: the 27-class maps they came from score
    100; read as 27-class maps they are refused, naming --fine-labels; image_labels.py reads
    the classes present the same way; --fine-labels with another class set is refused."""
    from mmdiffseg.datasets.class_names import COCOSTUFF27_CLASSES, COCOSTUFF27_FINE_IDS
    derived = shared_path('coco_val_samples', 'panopticapi', 'cocostuff27_derived')
    coarse = {name: np.array(Image.open(p)) for name, p in
              ((p.stem, p) for p in sorted(derived.glob('*.png')))}
    to_fine = np.full(256, 255, np.uint8)   # each class as its last fine id - 1
    to_fine[:27] = [COCOSTUFF27_FINE_IDS[name][-1] - 1 for name in COCOSTUFF27_CLASSES]
    fine = {name: to_fine[label] for name, label in coarse.items()}
    fine['000000142238'][:5, :5] = 182   # fine id 183, 'other' stuff: no coarse class
    _write_labels(tmp_path / 'gt', fine)
    _write_labels(tmp_path / 'labels', coarse)
    args = [tmp_path / 'labels', '--gt', tmp_path / 'gt', '--classes', 'cocostuff27']
    err = run_in_process('eval_labels', *args, expect=2)
    assert 'outside the 27 classes' in err and 'need --fine-labels' in err
    run_in_process('eval_labels', *args, '--fine-labels', '--out-json', tmp_path / 'r.json')
    report = json.loads((tmp_path / 'r.json').read_text())
    assert report['mIoU'] == 100.0 and report['images'] == 2
    present = {COCOSTUFF27_CLASSES[v] for label in coarse.values() for v in np.unique(label)
               if v != 255}
    assert {k for k, v in report['per_class_iou'].items() if v is not None} == present

    from mmdiffseg.apis.io import UserInputError
    image_labels = load_tool('dataset_converters/image_labels')
    image_labels.main([str(tmp_path / 'gt'), '--classes', 'cocostuff27', '--fine-labels',
                       '--out', str(tmp_path / 'labels.json')])
    written = json.loads((tmp_path / 'labels.json').read_text())
    assert {k: set(v) for k, v in written.items()} == {
        name: {COCOSTUFF27_CLASSES[v] for v in np.unique(label) if v != 255}
        for name, label in coarse.items()}
    with pytest.raises(UserInputError, match='it needs --classes cocostuff27, not voc'):
        image_labels.main([str(tmp_path / 'gt'), '--classes', 'voc', '--fine-labels',
                           '--out', str(tmp_path / 'x.json')])
    err = run_in_process('pseudo_label', '--dataset-config', 'any.py', '--labels-from-gt',
                         '--fine-labels', '--out', tmp_path / 'pl', expect=2)
    assert '--fine-labels is for a ground-truth folder' in err


def test_aacc_is_right_pixels_over_labelled_ground_truth(tmp_path):
    """aAcc counts an unsure (255) label on a labelled pixel as wrong: its denominator is the
    labelled ground truth, not the pixels that received a class."""
    from mmdiffseg.apis.eval_labels import evaluate_labels
    _write_labels(tmp_path / 'gt', dict(a=[[0, 0], [1, 1]]))
    _write_labels(tmp_path / 'pred', dict(a=[[0, 255], [1, 0]]))
    report = evaluate_labels(tmp_path / 'pred', tmp_path / 'gt', ['x', 'y'])
    assert report['aAcc'] == 50.0 and report['coverage'] == 75.0   # 2 right of 4, 3 given
    # x: TP 1, predicted 2, GT 2 -> 1/3; y: TP 1, predicted 1, GT 2 -> 1/2
    assert report['per_class_iou'] == pytest.approx(dict(x=100 / 3, y=50.0), abs=0.01)


def test_hungarian_acc_counts_unmatched_segments_as_misses(tmp_path):
    """--hungarian ACC = matched pixels / labelled pixels: the pixel of segment 6, which no class
    takes (class 0 is matched to segment 5), is a miss."""
    from mmdiffseg.apis.eval_labels import evaluate_segments
    _write_labels(tmp_path / 'gt', dict(a=[[0, 0], [0, 1]]))
    _write_labels(tmp_path / 'seg', dict(a=[[5, 5], [6, 7]]))
    report = evaluate_segments(tmp_path / 'seg', tmp_path / 'gt', ['x', 'y'])
    assert report['ACC'] == 75.0
    assert report['per_class_iou'] == dict(x=round(100 * 2 / 3, 2), y=100.0)


def test_an_id_not_ending_in_the_image_suffix_keeps_its_whole_name(tmp_path):
    """Only an id ending in the dataset's image suffix (Cityscapes' _leftImg8bit) is looked up
    without it: 'a_flipped_v02' (as long as '_leftImg8bit') has no ground truth and is reported,
    not scored against a.png."""
    from mmdiffseg.apis.ground_truth import GroundTruthFormat, find_ground_truth
    from mmdiffseg.apis.io import UserInputError
    _write_labels(tmp_path / 'gt', dict(a=[[0]]))
    fmt = GroundTruthFormat(id_suffix='_leftImg8bit')
    assert find_ground_truth(['a_leftImg8bit'], tmp_path / 'gt', fmt) == {
        'a_leftImg8bit': tmp_path / 'gt' / 'a.png'}
    with pytest.raises(UserInputError, match=r"no ground truth for 1 label\(s\), e.g. "
                                             r"\['a_flipped_v02'\]"):
        find_ground_truth(['a_flipped_v02'], tmp_path / 'gt', fmt)


def test_ground_truth_is_reduced_before_its_label_map(tmp_path):
    """As mmseg's LoadAnnotations: reduce_zero_label (0 -> 255, k -> k - 1) first, then the
    label map on the reduced values."""
    from mmdiffseg.apis.ground_truth import GroundTruthFormat
    _write_labels(tmp_path / 'gt', dict(a=[[1, 2, 0]]))
    fmt = GroundTruthFormat(reduce_zero_label=True, label_map={0: 1, 1: 0})
    assert fmt.read(tmp_path / 'gt' / 'a.png', ['x', 'y']).tolist() == [[1, 0, 255]]


def test_only_a_value_equal_to_the_class_count_suggests_reduce_zero_label(tmp_path):
    """Value N with N classes is ADE20K's 1-based last class (--reduce-zero-label); a value past
    N is the wrong class list or convention."""
    from mmdiffseg.apis.ground_truth import GroundTruthFormat
    from mmdiffseg.apis.io import UserInputError
    _write_labels(tmp_path / 'gt', dict(n=[[0, 2]], past=[[0, 7]]))
    with pytest.raises(UserInputError, match='holds values \\[2\\].*need --reduce-zero-label'):
        GroundTruthFormat().read(tmp_path / 'gt' / 'n.png', ['x', 'y'])
    with pytest.raises(UserInputError, match='holds values \\[7\\].*wrong --classes') as error:
        GroundTruthFormat().read(tmp_path / 'gt' / 'past.png', ['x', 'y'])
    assert 'annotations whose 0 means "other"' not in str(error.value)


def test_two_ground_truth_files_of_one_name_in_sub_folders_are_refused(tmp_path):
    """gtFine/train/a/x.png and gtFine/val/b/x.png: which one scores x is not guessed."""
    from mmdiffseg.apis.ground_truth import GroundTruthFormat, find_ground_truth
    from mmdiffseg.apis.io import UserInputError
    _write_labels(tmp_path / 'gt' / 'train' / 'a', dict(x=[[0]]))
    _write_labels(tmp_path / 'gt' / 'val' / 'b', dict(x=[[1]]))
    with pytest.raises(UserInputError, match='two ground-truth files named x.png under'):
        find_ground_truth(['x'], tmp_path / 'gt', GroundTruthFormat())


def test_a_label_of_another_size_than_its_ground_truth_is_refused(tmp_path):
    from mmdiffseg.apis.eval_labels import evaluate_labels, evaluate_segments
    from mmdiffseg.apis.io import UserInputError
    _write_labels(tmp_path / 'gt', dict(a=np.zeros((2, 3))))
    _write_labels(tmp_path / 'pred', dict(a=np.zeros((3, 2))))
    for evaluate in (evaluate_labels, evaluate_segments):
        with pytest.raises(UserInputError, match=r'a.png is 2x3 but its ground truth .* is 3x2; '
                           'the label is the ground truth\'s size turned a quarter: its image '
                           'likely has an EXIF orientation tag'):
            evaluate(tmp_path / 'pred', tmp_path / 'gt', ['x', 'y'])
    _write_labels(tmp_path / 'wider', dict(a=np.zeros((2, 4))))
    with pytest.raises(UserInputError, match=r'a.png is 4x2 but its ground truth .* is 3x2$'):
        evaluate_labels(tmp_path / 'wider', tmp_path / 'gt', ['x', 'y'])


def test_hungarian_iou_counts_the_pixels_a_segment_takes_from_another_class(tmp_path):
    """Segment 5 (matched to x) also covers a pixel of y: IoU x = 2 / 3 (a false positive),
    y = 1 / 2 (a miss); ACC 3 of 4."""
    from mmdiffseg.apis.eval_labels import evaluate_segments
    _write_labels(tmp_path / 'gt', dict(a=[[0, 0], [1, 1]]))
    _write_labels(tmp_path / 'seg', dict(a=[[5, 5], [5, 6]]))
    report = evaluate_segments(tmp_path / 'seg', tmp_path / 'gt', ['x', 'y'])
    assert report['per_class_iou'] == dict(x=round(100 * 2 / 3, 2), y=50.0)
    assert report['ACC'] == 75.0


def test_the_zero_label_note_is_only_for_labels_read_as_class_indices_without_manifest(
        tmp_path):
    """Ground truth in the reduce_zero_label convention: labels without a manifest read as class
    indices get the note; not with --labels-reduce-zero-label, nor a folder with a manifest (a
    tool's output, even one whose header names no classes)."""
    _write_labels(tmp_path / 'gt', dict(a=[[1, 2]]))
    _write_labels(tmp_path / 'plain', dict(a=[[1, 1]]))
    _write_labels(tmp_path / 'tool', dict(a=[[0, 1]]))
    (tmp_path / 'tool' / 'manifest.jsonl').write_text('{"manifest": "mmdiffseg", "tool": "x"}\n')
    args = ['--gt', tmp_path / 'gt', '--classes', 'a,b', '--reduce-zero-label']
    # each folder once: mmengine prints a repeated warning once per process
    assert '(no manifest)' not in run_in_process('eval_labels', tmp_path / 'plain', *args,
                                                 '--labels-reduce-zero-label')
    assert 'note:' not in run_in_process('eval_labels', tmp_path / 'tool', *args)
    assert '(no manifest)' in run_in_process('eval_labels', tmp_path / 'plain', *args)


def test_a_class_sets_ground_truth_settings_can_be_turned_off_by_an_option(tmp_path):
    """ADE20K's ground truth is read with reduce_zero_label unless False is given; a given
    suffix replaces the dataset's."""
    from mmdiffseg.apis.ground_truth import GroundTruthFormat
    assert GroundTruthFormat.of_class_set('ade20k').reduce_zero_label is True
    fmt = GroundTruthFormat.of_class_set('ade20k', '.tif', reduce_zero_label=False)
    assert fmt.reduce_zero_label is False and fmt.seg_map_suffix == '.tif'
    assert GroundTruthFormat.of_class_set('cityscapes').id_suffix == '_leftImg8bit'


def test_the_stem_suffix_keeps_all_but_the_last_extension():
    from mmdiffseg.apis.ground_truth import stem_suffix
    assert stem_suffix('_rgb.v2.png') == '_rgb.v2'
    assert stem_suffix('.jpg') == '' and stem_suffix(None) == '' and stem_suffix('_x') == '_x'


def test_out_of_range_ground_truth_names_its_first_ten_values(tmp_path):
    from mmdiffseg.apis.ground_truth import GroundTruthFormat
    from mmdiffseg.apis.io import UserInputError
    _write_labels(tmp_path / 'gt', dict(a=[list(range(14)) + [255]]))
    with pytest.raises(UserInputError) as error:
        GroundTruthFormat().read(tmp_path / 'gt' / 'a.png', ['x', 'y'])
    assert f'{tmp_path / "gt" / "a.png"} holds values {list(range(2, 12))} outside the 2 ' \
           'classes (0..1, 255 = ignore; read with reduce_zero_label=False)' in str(error.value)


def test_a_missing_cityscapes_ground_truth_is_named_by_the_file_looked_for(tmp_path):
    """The example names the file without the image suffix, as Cityscapes' ground truth is."""
    from mmdiffseg.apis.ground_truth import GroundTruthFormat, find_ground_truth
    from mmdiffseg.apis.io import UserInputError
    (tmp_path / 'gt').mkdir()
    fmt = GroundTruthFormat('_gtFine_labelTrainIds.png', id_suffix='_leftImg8bit')
    with pytest.raises(UserInputError) as error:
        find_ground_truth(['x_leftImg8bit'], tmp_path / 'gt', fmt, option='--gt')
    assert (f"looked in {tmp_path / 'gt'} (--gt) and its sub-folders for files such as "
            "'x_gtFine_labelTrainIds.png'") in str(error.value)


def test_labels_of_the_same_classes_in_another_order_are_refused(tmp_path):
    """Index 0 is 'a' in the labels but 'b' in --classes: unrelated indices."""
    from mmdiffseg.apis.eval_labels import check_label_classes
    from mmdiffseg.apis.io import UserInputError
    tmp_path.joinpath('manifest.jsonl').write_text('{"tool": "x", "classes": ["a", "b"]}\n')
    assert check_label_classes(tmp_path, ['a', 'b']) is True
    with pytest.raises(UserInputError, match=r"index the classes \['a', 'b'\] \(their manifest\), "
                                             r"but the ground truth is scored as \['b', 'a'\]"):
        check_label_classes(tmp_path, ['b', 'a'])
    from mmdiffseg.datasets import DATASET_CLASSES
    humans = list(DATASET_CLASSES['cityscapes_human_vehicle'])
    tmp_path.joinpath('manifest.jsonl').write_text(json.dumps(dict(tool='x', classes=humans)))
    with pytest.raises(UserInputError, match=r'\(in their order: --classes '
                                             r"cityscapes_human_vehicle, which reads its dataset's "
                                             r'ground truth\)'):
        check_label_classes(tmp_path, list(DATASET_CLASSES['cityscapes']))


def test_predictions_at_the_protocols_crop_are_scored_as_the_test_run_scores_them(tmp_path):
    """Segments saved at DiffSeg's evaluated size (a 512x512 centre crop of a 2:1 Cityscapes
    frame, as tools/test.py --out writes them) against the uncropped ground truth: refused with
    the option named; with --center-crop-resize 512 they score as HungarianMatchedIoU scores them
    on the Cityscapes-27 config's own pipeline (here: its ground truth with ids permuted, noise)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from mmdiffseg.evaluation import HungarianMatchedIoU
    init_default_scope('mmseg')
    rng = np.random.default_rng(0)
    root = tmp_path / 'cityscapes'
    (root / 'leftImg8bit/val/x').mkdir(parents=True)
    (root / 'gtFine/val/x').mkdir(parents=True)
    for name in ('x_0_1', 'x_0_2'):
        ids = np.repeat(np.repeat(rng.integers(5, 36, (6, 12)), 5, 0), 5, 1).astype(np.uint8)
        Image.fromarray(ids).save(root / f'gtFine/val/x/{name}_gtFine_labelIds.png')
        Image.fromarray(np.zeros((30, 60, 3), np.uint8)).save(
            root / f'leftImg8bit/val/x/{name}_leftImg8bit.png')
    cfg = Config.fromfile('configs/_base_/datasets/cityscapes27_unsupervised.py')
    dataset = dict(cfg.cityscapes27_test_dataloader.dataset, data_root=str(root))
    dataset.pop('_delete_')
    metric = HungarianMatchedIoU(num_classes=27)
    metric.dataset_meta = dict(classes=[str(i) for i in range(27)])
    preds = {}
    for sample in DATASETS.build(dataset):
        gt = sample['data_samples'].gt_sem_seg.data[0].numpy()
        pred = np.where(gt == 255, 3, (gt * 7 + 11) % 256).astype(np.uint8)
        noise = rng.random(pred.shape) < 0.2
        pred[noise] = rng.integers(0, 40, noise.sum())
        name = sample['data_samples'].img_path.split('/')[-1].replace('_leftImg8bit.png', '')
        preds[f'{name}_leftImg8bit'] = pred
        metric.process({}, [dict(pred_sem_seg=dict(data=torch.from_numpy(pred)[None]),
                                 gt_sem_seg=dict(data=torch.from_numpy(gt)[None]))])
    expected = metric.evaluate(2)
    _write_labels(tmp_path / 'out', preds)
    args = (tmp_path / 'out', '--gt', root / 'gtFine/val', '--classes', 'cityscapes27',
            '--hungarian')
    refused = run_in_process('eval_labels', *args, expect=2)
    assert 'is 512x512 but its ground truth' in refused
    assert '--center-crop-resize 512' in refused
    run_in_process('eval_labels', *args, '--center-crop-resize', '512',
                   '--out-json', tmp_path / 'r.json')
    report = json.loads((tmp_path / 'r.json').read_text())
    assert report['images'] == 2 and 40 < report['ACC'] < 100
    assert (report['ACC'], report['mIoU']) == (expected['ACC'], expected['mIoU'])
    # another side: its own named; labels of the ground truth's size: the option left out
    refused = run_in_process('eval_labels', *args, '--center-crop-resize', '256', expect=2)
    assert 'after --center-crop-resize 256; ' in refused
    assert 'score them with --center-crop-resize 512' in refused
    _write_labels(tmp_path / 'full', {name: np.zeros((30, 60)) for name in preds})
    refused = run_in_process('eval_labels', tmp_path / 'full', *args[1:],
                             '--center-crop-resize', '512', expect=2)
    assert ("after --center-crop-resize 512; the labels are of the ground truth's own size: "
            'leave the option out') in refused


def test_labels_named_otherwise_than_their_ground_truth_pair_with_id_suffix(tmp_path):
    """x_img.jpg labelled as x_img.png, its mask x_mask.png: the tool could not pair them (the
    Python API could, with GroundTruthFormat(id_suffix=...)); --id-suffix does."""
    _write_labels(tmp_path / 'gt', {'x_mask': [[0, 1]]})
    _write_labels(tmp_path / 'pred', {'x_img': [[0, 1]]})
    out = run_in_process('eval_labels', tmp_path / 'pred', '--gt', tmp_path / 'gt', '--classes',
                         'a,b', '--gt-suffix', '_mask.png', '--id-suffix', '_img')
    assert 'images: 1' in out and 'mIoU: 100.00' in out, out
    out = run_in_process('eval_labels', tmp_path / 'pred', '--gt', tmp_path / 'gt', '--classes',
                         'a,b', '--gt-suffix', '_mask.png', expect=2)   # the refusal names it
    assert ', and --id-suffix with the end of the label names that its names lack' in out, out
