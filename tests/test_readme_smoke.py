"""The README's CPU smoke path runs as written (its commands are read from README.md, between the
smoke-commands markers, so README and test cannot drift apart)."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sample_data import SHARED_DATA, shared_path

REPO = Path(__file__).resolve().parents[1]


def readme_smoke_commands():
    text = (REPO / 'README.md').read_text()
    block = re.search(r'<!-- smoke-commands[^>]*-->\n```bash\n(.*?)\n```\n<!-- /smoke-commands -->',
                      text, re.S)
    assert block, 'README.md has no smoke-commands block'
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_smoke_path_runs_as_written(tmp_path):
    shared_path('sd_configs', 'stable-diffusion-2-1-base')
    shared_path('voc2012_val_samples')
    clone = tmp_path / 'clone'      # a fresh clone: this checkout's code, no data, no work_dirs
    clone.mkdir()
    for name in ('tools', 'configs'):
        (clone / name).symlink_to(REPO / name)
    (tmp_path / 'shared').mkdir()
    (tmp_path / 'shared' / 'data').symlink_to(SHARED_DATA)   # ../shared/data, as in README
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    shim = bin_dir / 'python'   # a script, not a symlink: Python 3.13 finds no venv through one
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', HF_HUB_OFFLINE='1',
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    outputs = []
    for command in readme_smoke_commands():
        done = subprocess.run(['bash', '-c', command], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=900)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, f'{command}\n{outputs[-1][-3000:]}'
    assert (clone / 'work_dirs/tiny-stable-diffusion-2-1-base/model_index.json').is_file()
    assert len((clone / 'data/VOCdevkit/VOC2012/ImageSets/Segmentation/aug.txt').read_text()
               .split()) == 10
    assert 'Iter(train) [4/4]' in outputs[2]
    assert sorted((clone / 'work_dirs/label_cache').rglob('*.png'))   # labels made online
    miou = re.findall(r'mIoU: ([0-9.]+)', outputs[3])
    assert miou and 0 <= float(miou[-1]) <= 100
