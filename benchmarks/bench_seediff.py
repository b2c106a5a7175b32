"""SeeDiff post-processing per 512x512 image: ours vs a direct transcription of the released code.

The transcription follows ``seediff_app.py:save_cross_attention`` step by step as ALGORITHMS.md 2.3
describes it: per-layer CA normalisation in a loop, Otsu by ``cv2.threshold`` on
``uint16(x * 255)``, the similarity sum as a Python loop over seeds (one cosine row each, copied
to the CPU as released), ``cv2.resize(INTER_CUBIC)``, and PAMR as the released module computes it
(shift kernels applied with ``conv2d`` each step, then a product and a sum over neighbours). Both run the same
number of PAMR steps (5000 by default) on the same maps (built from a VOC ground-truth sample
with ``attention_from_labels``) and image. Also times one PAMR step on its own.

    python benchmarks/bench_seediff.py [--device cuda] [--repeats 1] [--pamr-iter 5000]
Writes benchmarks/results/seediff.md (a table: method, ours s/img, released s/img, ratio, ...);
a non-CPU run appends its rows to the existing table.
"""
import argparse
import datetime
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mmdiffseg.generators import SeeDiff
from mmdiffseg.generators.pamr import PAMR
from mmdiffseg.generators.seediff import CROSS_NAME, SEEDIFF_SELF_LAYERS
from mmdiffseg.generators.testing import attention_from_labels, load_label_png

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / 'shared' / 'data' / 'voc2012_val_samples'
VOC = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
       'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
       'sheep', 'sofa', 'train', 'tvmonitor')


# -- the released formulation, transcribed ----------------------------------------------------
class ConvPAMR(torch.nn.Module):
    """PAMR as the released module runs it: every step convolves the mask with 8 one-hot shift
    kernels (replicate padding) into a (B, C, 8, H, W) tensor, multiplies by the affinity and
    sums over the neighbours."""

    def __init__(self, num_iter, sigma_factor=0.2):
        super().__init__()
        self.num_iter, self.sigma_factor = num_iter, sigma_factor
        places = [(i, j) for i in range(3) for j in range(3)]
        shift = torch.zeros(9, 1, 3, 3)
        for k, (i, j) in enumerate(places):
            shift[k, 0, i, j] = 1
        self.register_buffer('window', shift)                  # 9 taps incl. the centre
        self.register_buffer('neighbours', shift[[k for k in range(9) if k != 4]])

    def taps(self, x, kernel):
        b, k, h, w = x.shape
        out = F.conv2d(F.pad(x.reshape(b * k, 1, h, w), [1] * 4, mode='replicate'), kernel)
        return out.reshape(b, k, -1, h, w)

    def forward(self, image, mask):
        sigma = self.taps(image, self.window).std(2, keepdim=True)
        diff = (self.taps(image, self.neighbours) - image.unsqueeze(2)).abs()
        affinity = (-diff / (1e-8 + self.sigma_factor * sigma)).mean(1, keepdim=True).softmax(2)
        for _ in range(self.num_iter):
            mask = (self.taps(mask, self.neighbours) * affinity).sum(2)
        return mask


def minmax(x):
    return (x - x.min()) / (x.max() - x.min())


def otsu_mask(x):
    """cv2 Otsu on uint16(x * 255) as released; returns a flat bool numpy array."""
    levels = (x * 255).astype(np.uint16)
    _, binary = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return binary.reshape(-1) > 0


def loop_similarity(rows, seed_idx):
    """sum over seeds of cos(rows, rows[s]), one seed at a time, accumulated on the CPU."""
    cos = torch.nn.CosineSimilarity(dim=1)
    total = torch.zeros(rows.shape[0])
    for s in seed_idx:
        total = total + cos(rows, rows[s].unsqueeze(0)).cpu()
    return total.numpy()


def released_mask(maps, token, image_hw3, pamr):
    """The released single-class post-processing on sample 0 (numpy/cv2 with a torch PAMR)."""
    layers = []
    for layer in maps[CROSS_NAME][0]:
        m = layer[:, token] * 8  # released sums 8 heads
        layers.append(minmax(m) * (0.01 if m.var() <= 1e-4 else 1))
    ca = minmax(torch.stack(layers).sum(0)).cpu().numpy()
    seeds = np.nonzero(otsu_mask((ca * ca).reshape(16, 16)))[0]
    current = minmax(loop_similarity(maps['seediff_self16'][0], seeds)).reshape(16, 16)
    for r in (32, 64):
        prior = cv2.resize(current, (r, r), interpolation=cv2.INTER_CUBIC)
        background = np.nonzero(~otsu_mask(prior * prior))[0]
        sim = loop_similarity(maps[f'seediff_self{r}'][0], background)
        current = minmax(minmax(1 - sim).reshape(r, r) * minmax(prior))
    h, w = image_hw3.shape[:2]
    final = minmax(cv2.resize(current, (w, h), interpolation=cv2.INTER_CUBIC))
    device = maps[CROSS_NAME].device
    mask = torch.from_numpy(final > 0.3).float()[None, None].to(device)
    image = torch.from_numpy(image_hw3).permute(2, 0, 1)[None].float().to(device)
    refined = pamr(image, mask)[0, 0]
    return (minmax(refined) > 0.8).cpu()


# -- the benchmark --------------------------------------------------------------------------------
def sample_inputs(device):
    if SAMPLE.exists():
        labels = load_label_png(SAMPLE / 'SegmentationClass' / 'voc_val_20.png')
        from PIL import Image
        rgb = np.array(Image.open(SAMPLE / 'JPEGImages' / 'voc_val_20.png').convert('RGB')
                       .resize((512, 512)))
        source = 'VOC voc_val_20 (sheep)'
    else:
        yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing='ij')
        labels = (((yy - 256) ** 2 + (xx - 200) ** 2) < 120 ** 2).long() * 17
        rgb = np.where(labels[..., None].numpy() > 0, 200, 60).astype(np.uint8).repeat(3, -1)
        source = 'synthetic disk (sheep)'
    maps, names = attention_from_labels(labels[None], VOC, noise=0.1, temperature=0.5,
                                        self_resolutions=(64, 32, 16), cross_resolutions=(16, ))
    for r in SEEDIFF_SELF_LAYERS:
        maps.maps[f'seediff_self{r}'] = maps.maps.pop(f'self{r}')
    maps.maps[CROSS_NAME] = maps.maps.pop('cross16')[:, None]
    return maps.to(device), names, rgb, source


def timed(fn, repeats, device):
    best, out = float('inf'), None
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument('--pamr-iter', type=int, default=5000)
    parser.add_argument('--threads', type=int, default=1, help='CPU threads (default 1)')
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'seediff.md'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    maps, names, rgb, source = sample_inputs(device)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
    token = maps.token_positions[0][names[0][0]][0]

    ours = SeeDiff(VOC, pamr_iter=args.pamr_iter).to(device)
    released_pamr = ConvPAMR(args.pamr_iter).to(device)
    with torch.no_grad():
        t_ours, labels = timed(lambda: ours(maps, image, names), args.repeats, device)
        t_rel, rel_mask = timed(lambda: released_mask(maps, token, rgb, released_pamr),
                                args.repeats, device)
        ours_mask = (labels[0] != 0).cpu()
        agree = (ours_mask == rel_mask).float().mean().item()

        steps = 50
        weights = PAMR(steps).to(device).affinity(image.float())
        mask = (torch.rand(1, 1, 512, 512, device=device) > 0.5).float()
        t_step, _ = timed(lambda: PAMR(steps).propagate(weights, mask), args.repeats, device)
        conv = ConvPAMR(steps).to(device)
        t_conv_step, _ = timed(lambda: conv(image.float(), mask), args.repeats, device)

    device_name = (torch.cuda.get_device_name(device) if device.type == 'cuda'
                   else f'CPU, {args.threads} thread(s)')
    date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    rows = [
        (f'SeeDiff post-processing, 512x512, PAMR {args.pamr_iter} steps', t_ours, t_rel),
        ('PAMR, one step at 512x512 (1 mask)', t_step / steps, t_conv_step / steps),
    ]
    lines = [
        '# SeeDiff post-processing benchmark', '',
        f'Input: {source}, maps from `attention_from_labels` (noise 0.1, temperature 0.5); '
        f'best of {args.repeats} run(s); `python benchmarks/bench_seediff.py --device '
        f'{args.device}`. Released formulation = per-seed cosine loop with CPU copies, cv2 Otsu '
        'and resize, conv2d PAMR (see the script docstring). The PAMR-step row of the released '
        'column includes its affinity once over 50 steps.', '',
        f'Foreground masks of the two agree on {agree * 100:.2f}% of pixels.', '',
        '| method | ours s/img | released-formulation s/img | ratio | device | date |',
        '|---|---|---|---|---|---|',
    ]
    lines += [f'| {name} | {a:.4g} | {b:.4g} | {b / a:.1f}x | {device_name} | {date} |'
              for name, a, b in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = '\n'.join(lines) + '\n'
    if out.exists() and args.device != 'cpu':
        text = out.read_text() + '\n' + '\n'.join(lines[-len(rows):]) + '\n'
    out.write_text(text)
    print(text)


if __name__ == '__main__':
    main()
