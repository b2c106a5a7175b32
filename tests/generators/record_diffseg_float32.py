"""Record DiffSeg's segments on the precision cases with the code before ``merge_precision``.

``test_diffseg_precision.py`` checks that ``merge_precision='float32'`` still gives them. Run with
the package of commit e32a25e first on the path, from the repository root:

    git archive e32a25e mmdiffseg | tar -x -C /tmp/e32a25e
    PYTHONPATH=/tmp/e32a25e:tests python3 tests/generators/record_diffseg_float32.py
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from diffseg_cases import AGREEMENT_CASES, SMALL_GRID, SMALL_OUTPUT, case_maps  # noqa: E402
from sample_data import shared_path  # noqa: E402
from mmdiffseg.generators import DiffSeg  # noqa: E402

OUT = Path(__file__).parent / 'data' / 'diffseg_float32_e32a25e.npz'

if __name__ == '__main__':
    torch.set_num_threads(1)
    generator = DiffSeg(resolutions=SMALL_GRID, output_size=SMALL_OUTPUT)
    if 'merge_precision' in generator.config_dict():
        sys.exit('run this with the package of commit e32a25e first on PYTHONPATH')
    segments = {f'{name}_{noise}': generator(case_maps(shared_path, name, noise), None, None)[0]
                .numpy().astype(np.int16) for name, noise in AGREEMENT_CASES}
    np.savez_compressed(OUT, **segments)
    print(f'wrote {OUT}: {sorted(segments)}')
