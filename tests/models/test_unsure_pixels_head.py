"""UnsurePixelsIgnoredMask2FormerHead: the stock losses where no pixel is 255; with 255 pixels the
mask and dice losses are those of the sure points alone (hand-computed on a small case), no mask
logit on a 255 pixel gets a gradient (the stock head's do), matching ignores them, and the head
builds and trains from the tiny CPU config."""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import TASK_UTILS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmdiffseg.models import UnsurePixelsIgnoredMask2FormerHead
from mmdiffseg.models.unsure_pixels_head import SurePointsAssigner

init_default_scope('mmseg')
CONFIG = str(Path(__file__).resolve().parents[2] / 'configs' / 'mask2former'
             / 'mask2former_tiny-cpu_voc12-seediff-synthetic-128x128.py')
SIZE = 16  # ground truth and mask logits on one grid: "the logits on 255 pixels" is exact


@pytest.fixture(scope='module')
def heads():
    torch.set_num_threads(1)
    cfg = copy.deepcopy(Config.fromfile(CONFIG).model.decode_head)
    torch.manual_seed(0)
    stock = MODELS.build(cfg)
    cfg['type'] = 'UnsurePixelsIgnoredMask2FormerHead'
    ours = MODELS.build(cfg)
    ours.load_state_dict(stock.state_dict())
    return stock, ours


def _samples(gts):
    samples = []
    for gt in gts:
        sample = SegDataSample(gt_sem_seg=PixelData(data=gt[None]))
        sample.set_metainfo(dict(img_shape=gt.shape, pad_shape=gt.shape))
        samples.append(sample)
    return samples


def _ground_truth(unsure: bool):
    """Two images: classes 3 / 7 and 0 / 15; with ``unsure``, 255 on the left of the first and
    around the object of the second (a synthetic image's background)."""
    a = torch.full((SIZE, SIZE), 3, dtype=torch.long)
    a[4:12, 5:13] = 7
    b = torch.full((SIZE, SIZE), 255 if unsure else 0, dtype=torch.long)
    b[2:9, 3:14] = 15
    if unsure:
        a[:, :3] = 255
    return [a, b]


def _losses(head, gts, cls, masks, seed=1):
    instances, metas = head._seg_data_to_instance_data(_samples(gts))
    torch.manual_seed(seed)  # the point sampling is random
    return head.loss_by_feat(cls, masks, instances, metas)


def _logits(head, num_imgs=2):
    torch.manual_seed(2)
    num_layers = head.num_transformer_decoder_layers + 1
    cls = torch.randn(num_layers, num_imgs, head.num_queries, head.num_classes + 1)
    masks = torch.randn(num_layers, num_imgs, head.num_queries, SIZE, SIZE, requires_grad=True)
    return cls, masks


def test_without_unsure_pixels_the_losses_are_the_stock_head_s(heads):
    stock, ours = heads
    gts = _ground_truth(unsure=False)
    cls, masks = _logits(stock)
    expected = _losses(stock, gts, cls, masks)
    got = _losses(ours, gts, cls, masks)
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_no_mask_logit_on_an_unsure_pixel_gets_a_gradient(heads):
    """The stock head pushes every query's mask logit down on 255 pixels; this one leaves them
    alone, while the sure pixels still train."""
    stock, ours = heads
    gts = _ground_truth(unsure=True)
    unsure = (torch.stack(gts) == 255)[None, :, None].expand(-1, -1, stock.num_queries, -1, -1)
    unsure = unsure.expand(stock.num_transformer_decoder_layers + 1, -1, -1, -1, -1)
    for head, leaves_them in ((ours, True), (stock, False)):
        cls, masks = _logits(head)
        losses = _losses(head, gts, cls, masks)
        assert all(torch.isfinite(v) for v in losses.values())
        sum(v for k, v in losses.items() if 'cls' not in k).backward()
        on_unsure = masks.grad[unsure].abs().max()
        assert (on_unsure == 0) if leaves_them else (on_unsure > 1e-6)
        assert masks.grad[~unsure].abs().max() > 1e-6


def test_point_losses_are_those_of_the_sure_points():
    """Hand-computed: the BCE is the mean over the sure points, the dice each mask's dice over
    its sure points (a mask without one: no loss)."""
    cfg = copy.deepcopy(Config.fromfile(CONFIG).model.decode_head)
    cfg['type'] = 'UnsurePixelsIgnoredMask2FormerHead'
    cfg['loss_dice']['eps'] = 1.0
    head = MODELS.build(cfg)
    preds = torch.tensor([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, -2.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, float('nan'), 1.0], [float('nan')] * 4])
    sure = ~torch.isnan(targets)
    bce = F.binary_cross_entropy_with_logits(preds[sure], targets[sure])
    got = head.loss_mask(preds.reshape(-1), targets.reshape(-1), avg_factor=2 * 4)
    assert torch.allclose(got, bce * head.loss_mask.loss.loss_weight)
    p, t = preds[0, [0, 1, 3]].sigmoid(), torch.tensor([1.0, 0.0, 1.0])  # mask 0's sure points
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)  # naive dice, eps 1
    got = head.loss_dice(preds, targets, avg_factor=2)
    assert torch.allclose(got, dice / 2 * head.loss_dice.loss.loss_weight)


def test_matching_compares_masks_on_the_sure_points_only():
    """Query 0 fits the ground truth on the sure points and is wrong on the unsure ones, query 1
    the other way round: the stock costs pick query 1, the sure points query 0; with no sure point
    left, the class scores decide."""
    cfg = Config.fromfile(CONFIG).model.decode_head.train_cfg.assigner
    assigner = SurePointsAssigner(TASK_UTILS.build(cfg))
    nan = float('nan')
    gt = InstanceData(labels=torch.tensor([0]),
                      masks=torch.tensor([[1.0, 1.0, 0.0, nan, nan, nan, nan, nan]]))
    fit_sure = torch.tensor([9.0, 9.0, -9.0, 9.0, 9.0, 9.0, 9.0, 9.0])
    fit_unsure = torch.tensor([-9.0, -9.0, 9.0, -9.0, -9.0, -9.0, -9.0, -9.0])
    scores = torch.zeros(2, 3)
    preds = InstanceData(scores=scores, masks=torch.stack([fit_sure, fit_unsure]))
    assert assigner.assign(preds, gt).gt_inds.tolist() == [1, 0]
    stock = assigner.assigner.assign(preds, InstanceData(labels=gt.labels,
                                                         masks=gt.masks.nan_to_num(0.0)))
    assert stock.gt_inds.tolist() == [0, 1]
    all_unsure = InstanceData(labels=torch.tensor([0]), masks=torch.full((1, 8), nan))
    preds.scores = torch.tensor([[-5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    assert assigner.assign(preds, all_unsure).gt_inds.tolist() == [0, 1]


def test_an_image_of_unsure_pixels_only_has_no_mask_loss(heads):
    _, ours = heads
    gts = [torch.full((SIZE, SIZE), 255, dtype=torch.long)]
    cls, masks = _logits(ours, num_imgs=1)
    losses = _losses(ours, gts, cls, masks)
    assert losses['loss_mask'] == 0 and losses['loss_dice'] == 0
    assert torch.isfinite(losses['loss_cls'])


def test_builds_trains_and_predicts_from_the_config():
    torch.set_num_threads(1)
    cfg = copy.deepcopy(Config.fromfile(CONFIG).model.decode_head)
    cfg['type'] = 'UnsurePixelsIgnoredMask2FormerHead'
    torch.manual_seed(0)
    head = MODELS.build(cfg)
    assert isinstance(head, UnsurePixelsIgnoredMask2FormerHead)
    size = 64
    feats = tuple(torch.randn(2, c, size // s, size // s, requires_grad=True)
                  for c, s in zip(cfg['in_channels'], (4, 8, 16, 32)))
    gt = torch.full((size, size), 255, dtype=torch.long)
    gt[10:40, 12:50] = 5
    gt2 = torch.zeros((size, size), dtype=torch.long)
    gt2[30:, :20] = 11
    losses = head.loss(feats, _samples([gt, gt2]), head.train_cfg)
    total = sum(losses.values())
    assert {'loss_cls', 'loss_mask', 'loss_dice'} <= set(losses)
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    head.eval()
    with torch.no_grad():
        seg_logits = head.predict(feats, [dict(img_shape=(size, size), pad_shape=(size, size))],
                                  None)
    assert seg_logits.shape == (2, head.num_classes, size, size)


@pytest.mark.parametrize('name', ['iseg-pseudo', 'seediff-synthetic'])
def test_the_ade20k_generated_label_configs_use_it(name):
    """A synthetic ADE20K image is 255 outside its one object (ADE20K has no background)."""
    path = Path(CONFIG).parent / f'mask2former_r50_8xb2-160k_ade20k-{name}-512x512.py'
    head = Config.fromfile(path).model.decode_head
    assert head.type == 'UnsurePixelsIgnoredMask2FormerHead'  # (ignore_index: 255, the default)
