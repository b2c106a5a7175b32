"""Fixtures of the tool tests: the tiny random-weights SD 2.1-base, saved once per module."""
import pytest
from sample_data import shared_path


@pytest.fixture(scope='module')
def tiny_sd(tmp_path_factory):
    from mmdiffseg.attention.testing import build_tiny_pipeline_folder
    config_dir = shared_path('sd_configs', 'stable-diffusion-2-1-base')
    return build_tiny_pipeline_folder(config_dir, tmp_path_factory.mktemp('sd') / 'tiny-sd21')
