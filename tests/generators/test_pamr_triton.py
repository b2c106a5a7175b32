"""The fused Triton PAMR kernel against the PyTorch propagation, on CPU under Triton's interpreter.

The kernel runs in a child process with ``TRITON_INTERPRET=1`` (the variable must be set before
Triton is imported); the PyTorch references run here. Expected agreement: the kernel rounds as
the PyTorch path does (product, then FMAs in the same order), so the results match to within the
documented bound ``2 n P 2^-24 max|m|`` (not bit for bit: the interpreter's ``tl.fma`` rounds
the product and the sum separately).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pamr_interpreted_cases import CASES, case_inputs, inputs
from sample_data import REPO
from mmdiffseg.generators.pamr import PAMR

pytest.importorskip('triton', reason='triton is not installed (pip install triton: the tests '
                    'extra); the fused PAMR kernel is tested under its interpreter')


@pytest.fixture(scope='module')
def fused_outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp('pamr_triton') / 'fused.pt'
    script = Path(__file__).with_name('pamr_interpreted_cases.py')
    env = dict(os.environ, TRITON_INTERPRET='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    run = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return torch.load(out)


def reference(name):
    image, mask = inputs(name)
    return PAMR(**CASES[name][1], backend='torch')(image, mask), mask


@pytest.mark.parametrize('name', sorted(CASES))
def test_fused_kernel_equals_the_pytorch_propagation(fused_outputs, name):
    expected, mask = reference(name)
    settings = CASES[name][1]
    taps = 8 * len(settings.get('dilations', (1, )))
    bound = 2 * settings['num_iter'] * taps * 2.0 ** -24 * mask.abs().max().item()
    fused = fused_outputs[name]
    assert fused.shape == expected.shape and fused.dtype == torch.float32
    assert (fused - expected).abs().max().item() <= bound
    assert not torch.equal(expected, mask)  # the steps moved the mask


def test_fused_early_stop_stops_at_the_same_step(fused_outputs):
    shape, settings, _ = CASES['early_stop']
    image, mask = case_inputs(shape)
    twelve = PAMR(**dict(settings, num_iter=12, tol=None))(image, mask)
    assert torch.allclose(fused_outputs['early_stop'], twelve, rtol=0, atol=1e-6)
    assert not torch.allclose(twelve, PAMR(**dict(settings, num_iter=15, tol=None))(image, mask),
                              rtol=0, atol=1e-3)


def test_launch_plan_keeps_the_halo_within_a_quarter_of_the_tile():
    from mmdiffseg.generators.pamr_triton import launch_plan
    assert launch_plan(1, 8, 64) == (8, 64)      # SeeDiff: 48x48 output pixels per tile
    assert launch_plan(2, 8, 16) == (2, 16)
    assert launch_plan(24, 8, 64) == (1, 128)    # original PAMR: one step, a larger tile
    with pytest.raises(ValueError, match='tile a power of two'):
        launch_plan(1, 8, 48)


@pytest.mark.parametrize('steps, tile', [(0, 64), (8, 4), (8, 0)])
def test_launch_plan_refuses_no_steps_and_tiles_below_8(steps, tile):
    """The documented limits: at least one step a launch, a tile of 8 or more."""
    from mmdiffseg.generators.pamr_triton import launch_plan
    with pytest.raises(ValueError, match=rf'>= 1 and tile a power of two >= 8, got {steps} and '
                                         rf'{tile}'):
        launch_plan(1, steps, tile)


def test_fused_early_stop_measures_decreases_too(fused_outputs):
    """The stop test takes the largest absolute change: on a lone spike (a decrease of 1, then
    0.40, while no pixel rises by 0.5) the run with ``tol=0.5`` checked every step stops after
    step 2, as two plain steps."""
    image, mask = inputs('early_stop_spike')
    settings = dict(CASES['early_stop_spike'][1], tol=None)
    two = PAMR(**dict(settings, num_iter=2))(image, mask)
    torch.testing.assert_close(fused_outputs['early_stop_spike'], two, rtol=0, atol=1e-6)
    assert not torch.allclose(two, PAMR(**dict(settings, num_iter=1))(image, mask), atol=1e-2)


def test_fused_kernel_leaves_the_callers_mask_alone(fused_outputs):
    """The steps ping-pong between the kernel's own buffers: the input mask (float32 and
    contiguous, so ``.float().contiguous()`` returns it as is) is never written."""
    assert fused_outputs['masks_untouched'] is True


def test_fused_change_covers_only_the_exact_output_pixels(fused_outputs):
    """The stop test reads the change of each tile's output pixels only: on ones and a bump of
    0.005 (``tol=0.01``, one step a launch) the run stops after step 1, as one plain step, though
    the block rows next to the output (stale after a step) change by far more than ``tol``."""
    image, mask = inputs('early_stop_halo')
    settings = dict(CASES['early_stop_halo'][1], tol=None)
    one = PAMR(**dict(settings, num_iter=1))(image, mask)
    torch.testing.assert_close(fused_outputs['early_stop_halo'], one, rtol=0, atol=1e-6)
    assert not torch.allclose(one, PAMR(**dict(settings, num_iter=4))(image, mask), atol=1e-5)
