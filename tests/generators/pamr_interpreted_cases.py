"""Cases for the fused Triton PAMR kernel, run on CPU by Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before Triton is first imported, so the cases run in a child
process (``python pamr_interpreted_cases.py OUT.pt``, see ``test_pamr_triton.py``); this module
itself imports neither Triton nor the kernel. Sizes are tiny: the interpreter runs ~1 ms per
tensor operation. ``tile=16`` makes several tiles (8x8 output pixels each) on these images, so
the halo recomputation between tiles is exercised.
"""
import sys

import torch

from mmdiffseg.generators.pamr import ORIGINAL_PAMR, PAMR

#: name -> (image/mask shape (B, C, H, W), PAMR settings, fused_propagate options or None for
#: ``PAMR(backend='triton')`` with its defaults)
CASES = {
    'seediff_tiles_batch2': ((2, 1, 13, 11), dict(num_iter=10), dict(tile=16, steps_per_launch=4)),
    'dilations12_channels2': ((1, 2, 12, 9), dict(num_iter=5, dilations=(1, 2), sigma_factor=0.1),
                              dict(tile=16, steps_per_launch=8)),
    'original_pamr_module': ((1, 2, 30, 29), dict(ORIGINAL_PAMR, num_iter=2), None),
    # the largest change falls below 0.1 at step 12 (a check: 12 % 3 == 0), the runs stop there
    'early_stop': ((1, 1, 9, 10), dict(num_iter=60, tol=0.1, check_every=3),
                   dict(tile=16, steps_per_launch=4)),
    # a single spike: the largest change is a decrease (1 at step 1, 0.40 at step 2) while the
    # largest increase is below tol from step 1 on: the runs stop at step 2
    'early_stop_spike': ((1, 1, 9, 10), dict(num_iter=20, tol=0.5, check_every=1),
                         dict(tile=16, steps_per_launch=4)),
    # ones and a bump of 0.005: the exact change is below tol at step 1, where the stale rows
    # just past a tile's output (one step reads the zero ring) change by ~0.3; 2 x 3 tiles of
    # 14 x 14 on a wide image, so tile rows and columns differ in number
    'early_stop_halo': ((1, 1, 20, 31), dict(num_iter=4, tol=0.01, check_every=1),
                        dict(tile=16, steps_per_launch=1)),
}


def case_inputs(shape):
    """A random image in 0..255 with 3 channels and a random mask, both ``(B, ., H, W)``."""
    b, c, h, w = shape
    gen = torch.Generator().manual_seed(h * 100 + w)
    return torch.rand(b, 3, h, w, generator=gen) * 255, torch.rand(b, c, h, w, generator=gen)


def inputs(name):
    """The image and mask of case ``name`` (:func:`case_inputs`; a lone 1 in zeros for the
    spike case, ones and a small bump for the halo case)."""
    image, mask = case_inputs(CASES[name][0])
    if name == 'early_stop_spike':
        mask = torch.zeros_like(mask)
        mask[..., 4, 5] = 1.0
    if name == 'early_stop_halo':
        mask = torch.ones_like(mask)
        mask[..., 5, 7] += 0.005
    return image, mask


def run_fused(name):
    from mmdiffseg.generators.pamr_triton import fused_propagate
    _, settings, options = CASES[name]
    image, mask = inputs(name)
    given = mask.clone()
    if options is None:
        out = PAMR(**settings, backend='triton')(image, mask)
    else:
        pamr = PAMR(**settings)
        out = fused_propagate(pamr.affinity(image).flatten(1, 2), mask, pamr.dilations,
                              pamr.num_iter, pamr.tol, pamr.check_every, **options)
    return out, torch.equal(mask, given)


if __name__ == '__main__':
    runs = {name: run_fused(name) for name in CASES}
    outputs = {name: out for name, (out, _) in runs.items()}
    outputs['masks_untouched'] = all(kept for _, kept in runs.values())
    torch.save(outputs, sys.argv[1])
