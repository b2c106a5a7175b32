"""Shared set-up of the end-to-end tool tests: a small VOC folder, the tiny SD, test configs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
TINY_ONLINE_CONFIG = REPO / 'configs/mask2former/mask2former_tiny-cpu_voc12-iseg-online-128x128.py'
VOC_IMAGES = ('voc_val_0', 'voc_val_1', 'voc_val_20', 'voc_val_23')


def make_voc_root(samples: Path, root: Path, names=VOC_IMAGES) -> Path:
    """A VOC-layout folder (PNG images) with ``names`` in train.txt and val.txt."""
    for sub in ('JPEGImages', 'SegmentationClass'):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = root / sub / f'{name}.png'
            if not link.exists():
                link.symlink_to(samples / sub / f'{name}.png')
    split = root / 'ImageSets' / 'Segmentation'
    split.mkdir(parents=True, exist_ok=True)
    for part in ('train', 'val'):
        (split / f'{part}.txt').write_text('\n'.join(names) + '\n')
    return root


def set_label_cache(cfg: Config, cache: dict) -> None:
    """The same label-cache settings in the preprocessor and in LoadPseudoLabel."""
    cfg.model.data_preprocessor.label_cache = cache
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'LoadPseudoLabel':
            step['cache'] = cache


def set_voc_data(cfg: Config, root: Path, img_suffix: str = '.png') -> None:
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(root)
        loader.dataset.img_suffix = img_suffix


def write_config(cfg: Config, path: Path) -> Path:
    cfg.dump(str(path))
    return path


def run_tool(tool: str, *args, cwd: Path) -> str:
    """Run ``tools/<tool>.py`` in a fresh single-threaded Python; its output (raises on failure)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / f'{tool}.py'), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f'tools/{tool}.py failed ({proc.returncode}):\n{output[-6000:]}')
    return output


def scalars(work_dir: Path) -> list:
    """The training log's per-iteration scalars (mmengine's vis_data/scalars.json)."""
    files = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert files, f'no scalars.json under {work_dir}'
    return [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]
