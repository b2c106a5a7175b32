"""Shared set-up of the end-to-end tool tests: a small VOC folder, the tiny SD, test configs."""
from __future__ import annotations

import contextlib
import io
import re
import socket
from pathlib import Path

from mmengine.config import Config
from sample_data import shared_path
from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[2]
TINY_ONLINE_CONFIG = REPO / 'configs/mask2former/mask2former_tiny-cpu_voc12-iseg-online-128x128.py'
VOC_IMAGES = ('voc_val_0', 'voc_val_1', 'voc_val_20', 'voc_val_23')


def free_port() -> int:
    """A TCP port nothing listens on now: torchrun rendezvous of tests running side by side."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_voc_root(samples: Path, root: Path, names=VOC_IMAGES) -> Path:
    """A VOC-layout folder (PNG images) with ``names`` in train.txt, val.txt and aug.txt (the
    masks also as SegmentationClassAug)."""
    for sub, source in (('JPEGImages', 'JPEGImages'), ('SegmentationClass', 'SegmentationClass'),
                        ('SegmentationClassAug', 'SegmentationClass')):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = root / sub / f'{name}.png'
            if not link.exists():
                link.symlink_to(samples / source / f'{name}.png')
    split = root / 'ImageSets' / 'Segmentation'
    split.mkdir(parents=True, exist_ok=True)
    for part in ('train', 'val', 'aug'):
        (split / f'{part}.txt').write_text('\n'.join(names) + '\n')
    return root


def set_label_cache(cfg: Config, cache: dict) -> None:
    """The label-cache settings (folder, model, generator) of LoadPseudoLabel, the one place a
    config holds them (the preprocessor reads them from the samples)."""
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'LoadPseudoLabel':
            step['cache'] = cache


def set_voc_data(cfg: Config, root: Path, img_suffix: str = '.png') -> None:
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(root)
        loader.dataset.img_suffix = img_suffix


def online_config(tmp_path: Path, tiny_sd: Path, names=None) -> Config:
    """The tiny online config on a VOC folder of ``names``, its own cache, a short iSeg."""
    root = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'voc',
                         **({'names': names} if names else {}))
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    set_voc_data(cfg, root)
    generator = dict(cfg.tiny_label_generator.to_dict(), iters=3, cluster_iters=3)
    set_label_cache(cfg, dict(cache_dir=str(tmp_path / 'cache'), model=str(tiny_sd),
                              generator=generator))
    return cfg


def write_config(cfg: Config, path: Path) -> Path:
    cfg.dump(str(path))
    return path


def run_tool(tool: str, *args) -> str:
    """Run ``tools/<tool>.py`` with ``args``; what it printed (stdout and stderr)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        load_tool(tool).main([str(a) for a in args])
    return buffer.getvalue()


def train_log(work_dir: Path, name: str = '*.log') -> list:
    """Per training iteration, the scalars of the run's text log (``name: value`` pairs of the
    ``Iter(train)`` lines; the text log is per run even when runs share a process). ``name``:
    the log file's pattern (``*_rank1.log``: rank 1's log of a run with ``log_level='DEBUG'``)."""
    logs = sorted(work_dir.glob(f'*/{name}'))
    assert logs, f'no log under {work_dir}'
    rows = []
    for line in logs[-1].read_text().splitlines():
        if 'Iter(train)' in line:
            rows.append({k: float(v) for k, v in
                         re.findall(r'([A-Za-z_][\w.]*): (-?[0-9.]+(?:e[-+]?[0-9]+)?)', line)})
    return rows
