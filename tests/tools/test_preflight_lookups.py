"""Pre-flight's offline look-ups, smoke-run hints, generator options and CUDA needs
(mmdiffseg.preflight), each on a small hand-made case."""
import pytest
import torch
from mmengine.config import Config

import mmdiffseg  # noqa: F401
from mmdiffseg import preflight

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message without CUDA')


@pytest.fixture(autouse=True)
def no_network_probes(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    preflight.reachable.cache_clear()
    yield
    preflight.reachable.cache_clear()


@pytest.mark.parametrize('value, expected', [
    ('1', True), ('true', True), ('YES', True), ('On', True),
    ('0', False), ('', False), ('false', False), ('off', False)])
def test_hf_hub_offline_is_read_as_huggingface_hub_reads_it(monkeypatch, value, expected):
    """huggingface_hub takes 1/true/yes/on (any case) as offline: so must the pre-flight, or it
    probes the network where the hub would not."""
    monkeypatch.setenv('HF_HUB_OFFLINE', value)
    assert preflight.offline() is expected


def hf_cache(tmp_path, monkeypatch, model: str, *, has_index: bool):
    """A Hugging Face cache holding ``model`` at main, with model_index.json or with the hub's
    record that the file does not exist (``.no_exist``)."""
    from huggingface_hub import constants
    repo = tmp_path / 'hf' / ('models--' + model.replace('/', '--'))
    folder = repo / ('snapshots' if has_index else '.no_exist') / '0123abcd'
    folder.mkdir(parents=True)
    (folder / 'model_index.json').write_text('{}' if has_index else '')
    (repo / 'refs').mkdir()
    (repo / 'refs/main').write_text('0123abcd')
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))


def test_a_cached_no_such_file_record_is_not_the_weights(tmp_path, monkeypatch):
    """The hub caches "model_index.json does not exist" for a repo: that is no diffusers model,
    and offline it is reported missing with the download command."""
    monkeypatch.chdir(tmp_path)
    hf_cache(tmp_path, monkeypatch, 'org/not-diffusers', has_index=False)
    (item,) = preflight.check_sd_model('org/not-diffusers', ['model.sd_model'])
    assert item.what.startswith("Stable Diffusion weights 'org/not-diffusers': no such local "
                                'folder, and not in the Hugging Face cache')
    assert item.what.endswith('(offline)') and item.where == ['model.sd_model']
    assert item.fix.startswith('where there is network: hf download org/not-diffusers (then')
    hf_cache(tmp_path / 'b', monkeypatch, 'org/sd', has_index=True)
    assert preflight.check_sd_model('org/sd', ['model.sd_model']) == []


def test_a_missing_local_folder_that_looks_like_a_hub_id_is_a_folder(tmp_path, monkeypatch):
    """``work_dirs/tiny-sd`` is hub-id shaped, but work_dirs is here: its fix is the local
    folder, not an hf download of a repo named work_dirs/tiny-sd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_CACHE', str(tmp_path / 'hf'))
    (tmp_path / 'work_dirs').mkdir()
    (item,) = preflight.check_sd_model('work_dirs/tiny-sd', ['model.sd_model'])
    assert item.what == "Stable Diffusion folder 'work_dirs/tiny-sd' not found"
    assert 'hf download' not in item.fix
    assert item.fix.startswith('pass a local diffusers folder: --cfg-options '
                               'model.sd_model=/path/to/diffusers-folder (')


def test_a_model_named_like_a_sample_config_but_longer_gets_the_tiny_cpu_hint():
    """Only the workspace's SD config names themselves get a tiny copy of their own: an
    inpainting variant of SD 1.4 has no configs there, so the hint is the tiny-cpu SD 2.1."""
    hint = preflight.smoke_run_hint('someone/stable-diffusion-v1-4-inpainting', ['model.sd_model'])
    assert hint.startswith('random weights for a smoke run of the tiny-cpu configs: ')
    assert '--out work_dirs/tiny-stable-diffusion-2-1-base;' in hint and 'inpainting' not in hint
    own = preflight.smoke_run_hint('CompVis/stable-diffusion-v1-4/', ['a.b', 'c'])
    assert own.endswith('then --cfg-options a.b=work_dirs/tiny-stable-diffusion-v1-4 '
                        'c=work_dirs/tiny-stable-diffusion-v1-4')


def test_an_unknown_option_is_pointed_at_the_one_meant_even_when_set():
    """``iter`` next to ``iters`` (the config's ``iters``, ``--cfg-options ...iter=3``): iters is
    the option meant, as for the model's and datasets' keys (the generator check pointed at
    none); with no option near, the fix lists them in signature order."""
    for generator in (dict(type='ISeg', iters=2, iter=3), dict(type='ISeg', iter=3)):
        (item,) = preflight.check_generator(generator, 'cache.generator')
        assert item.what == "cache.generator: ISeg has no option 'iter' (did you mean 'iters'?)"
        assert item.fix == ('set cache.generator.iters instead of cache.generator.iter (in the '
                            'config or --cfg-options)')
    (item,) = preflight.check_generator(dict(type='ISeg', zzzz=3), 'cache.generator')
    assert item.fix.startswith('remove cache.generator.zzzz (the options of ISeg: classes, ')
    assert item.fix.endswith('--cfg-options cannot remove a key: in a derived config, give the '
                             'entry whole with _delete_=True, e.g. after switching its type)')
    (item,) = preflight.check_generator(dict(type='DifSeg'), 'g')
    assert item.what == "g.type: unknown generator 'DifSeg' (did you mean 'DiffSeg'?)"
    assert item.fix.startswith('--cfg-options g.type=DiffSeg (the generators: ')
    listed = item.fix.split('(the generators: ')[1].rstrip(')').split(', ')
    assert {'DiffSeg', 'ISeg', 'SeeDiff'} <= set(listed) and listed == sorted(listed)  # + tests'


def test_a_folder_in_place_of_a_checkpoint_is_no_checkpoint(tmp_path):
    """A folder named like the checkpoint file is reported with the setting to change."""
    (tmp_path / 'iter_4.pth').mkdir()
    key = 'model.backbone.init_cfg.checkpoint'
    (item,) = preflight.check_checkpoint(str(tmp_path / 'iter_4.pth'), key)
    assert item.what == f'checkpoint {tmp_path}/iter_4.pth not found' and item.where == [key]
    assert item.fix == f'train the run that writes it first, or set {key}=/path/to/file.pth'


def cuda_fix(cfg: dict, mode: str = 'train', **kwargs) -> str:
    (item,) = preflight.check(Config(cfg), mode, **kwargs)
    assert item.what.startswith('a CUDA device (torch sees none: ') and item.where == ['config']
    return item.fix


@NO_CUDA
def test_any_cuda_device_index_needs_a_gpu():
    """``device='cuda:1'`` (a setting or prefill's --device) needs CUDA as ``'cuda'`` does."""
    fix = cuda_fix(dict(model=dict(data_preprocessor=dict(device='cuda:1'))))
    assert fix.endswith('; or, to run without one, change what needs it: '
                        'model.data_preprocessor.device=cuda:1 (--cfg-options '
                        'model.data_preprocessor.device=cpu)')
    fix = cuda_fix(dict(train_dataloader=dict(dataset=dict())), 'prefill', device='cuda:1')
    assert fix.endswith('change what needs it: --device cuda:1 (--device cpu)')
    assert preflight.check(Config(dict(train_dataloader=dict(dataset=dict()))), 'prefill',
                           device='cpu') == []


@NO_CUDA
def test_nccl_needs_a_gpu_only_where_the_launcher_keeps_it():
    """Under torchrun (launcher='pytorch') the ranks join with gloo without CUDA; slurm and mpi
    keep nccl, which needs one."""
    dist = dict(env_cfg=dict(dist_cfg=dict(backend='nccl')))
    for launcher in ('none', 'pytorch'):
        assert preflight.check(Config(dict(dist, launcher=launcher)), 'train') == []
    for launcher in ('slurm', 'mpi'):
        assert cuda_fix(dict(dist, launcher=launcher)).endswith(
            'env_cfg.dist_cfg.backend=nccl (--cfg-options env_cfg.dist_cfg.backend=gloo)')


@NO_CUDA
def test_amp_and_the_labelers_float16_are_needs_of_training_only():
    """AMP is a training setting, and the online labeler's float16 engine runs only where
    it labels: neither needs a GPU for a test."""
    amp = dict(optim_wrapper=dict(type='AmpOptimWrapper'))
    assert 'optim_wrapper.type=AmpOptimWrapper (AMP: drop --amp' in cuda_fix(amp)
    assert preflight.check(Config(amp), 'test') == []
    labeler = dict(model=dict(data_preprocessor=dict(type='DiffusionLabelPreprocessor',
                                                     engine_dtype='float16')))
    key = 'model.data_preprocessor.engine_dtype'
    assert cuda_fix(labeler).endswith(
        f'{key}=float16 (--cfg-options {key}=float32 runs the diffusion model on the CPU)')
    assert preflight.check(Config(labeler), 'test') == []


def test_only_a_label_caches_model_or_an_sd_model_key_is_taken_for_stable_diffusion(tmp_path):
    """``model`` is a Stable Diffusion model beside ``cache_dir`` (a label cache) or as
    ``sd_model``; another component's ``model`` string (a timm name) is not looked up."""
    cfg = Config(dict(model=dict(type='EncoderDecoder', backbone=dict(
        type='mmpretrain.TIMMBackbone', model='convnext_tiny'))))
    assert not [m for m in preflight.check(cfg, 'test') if 'Stable Diffusion' in m.what]
    cfg.model.backbone.cache_dir = str(tmp_path)                  # now a label cache's setting
    [found] = [m for m in preflight.check(cfg, 'test') if 'Stable Diffusion' in m.what]
    assert found.where == ['model.backbone.model']


def hub_checkpoints(tmp_path, monkeypatch):
    """An empty torch hub cache; its checkpoints folder (not made)."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    return tmp_path / 'hub' / 'checkpoints'


def test_a_remote_checkpoint_is_looked_up_in_the_hub_cache_by_its_url(tmp_path, monkeypatch):
    """``torchvision://`` (torchvision is installed here) and ``open-mmlab://`` names under
    mmengine's old names resolve to the URL mmengine downloads; missing offline, the fix is a wget
    into the hub cache; once the file is there nothing is missing."""
    from mmengine.runner import checkpoint as ckpt
    cache, key = hub_checkpoints(tmp_path, monkeypatch), 'model.backbone.init_cfg.checkpoint'
    url = ckpt.get_torchvision_models()['resnet50']
    (item,) = preflight.check_checkpoint('torchvision://resnet50', key)
    assert item.what == (f'pretrained weights torchvision://resnet50 ({url}): not in the torch '
                         f'hub cache {cache} and offline') and item.where == [key]
    assert item.fix == (f'download it where there is network (wget -P {cache} {url}) and copy '
                        f'it into {cache}, or set {key}=/path/to/file.pth')
    cache.mkdir(parents=True)
    (cache / url.rsplit('/', 1)[1]).write_bytes(b'')
    assert preflight.check_checkpoint('torchvision://resnet50', key) == []
    # resnet50_caffe: mmengine's deprecated name of detectron/resnet50_caffe
    assert ckpt.get_deprecated_model_names()['resnet50_caffe'] == 'detectron/resnet50_caffe'
    assert preflight.checkpoint_url('open-mmlab://resnet50_caffe') == \
        ckpt.get_external_models()['detectron/resnet50_caffe']


def test_a_checkpoint_url_is_downloadable_only_below_http_400(tmp_path, monkeypatch):
    """Online, a URL that answers with an error status (400 and above) or not at all is "not
    downloadable from here"; a redirect-like status below 400 counts as reachable."""
    import urllib.error
    import urllib.request
    monkeypatch.delenv('HF_HUB_OFFLINE')
    hub_checkpoints(tmp_path, monkeypatch)
    status = {}

    def urlopen(request, timeout):
        if status['code'] is None:
            raise urllib.error.URLError('no route to host')
        raise urllib.error.HTTPError(request.full_url, status['code'], 'status', {}, None)

    monkeypatch.setattr(urllib.request, 'urlopen', urlopen)
    for code, reachable in ((399, True), (400, False), (404, False), (None, False)):
        status['code'] = code
        preflight.reachable.cache_clear()
        assert preflight.reachable('https://example.org/w.pth') is reachable, code
    (item,) = preflight.check_checkpoint('https://example.org/w.pth', 'load_from')
    assert item.what.endswith('and not downloadable from here')


@NO_CUDA
def test_the_triton_pamr_kernel_needs_a_gpu():
    """``pamr_backend='triton'`` runs only on CUDA, as ``'graph'`` does."""
    key = 'model.data_preprocessor.pamr_backend'
    fix = cuda_fix(dict(model=dict(data_preprocessor=dict(pamr_backend='triton'))))
    assert fix.endswith(f'{key}=triton (--cfg-options {key}=auto takes the Triton kernel only '
                        'on a GPU)')


def test_the_validation_data_is_checked_only_where_training_validates(tmp_path):
    """Without ``val_cfg`` the runner never builds ``val_dataloader`` nor runs ``val_evaluator``:
    a missing validation set or a metric of class indices for DiffSeg's segment ids is no
    problem then."""
    cfg = Config(dict(
        model=dict(type='DiffusionSegmentor', generator=dict(type='DiffSeg')),
        val_dataloader=dict(dataset=dict(
            type='PascalVOCDataset', pipeline=[], data_root=str(tmp_path / 'none'))),
        val_evaluator=dict(type='IoUMetric')))
    assert not [m for m in preflight.check(cfg) if any('val_' in w for w in m.where)]
    cfg.val_cfg = dict(type='ValLoop')
    where = [w for m in preflight.check(cfg) for w in m.where if 'val_' in w]
    assert 'val_evaluator' in where and any(w.startswith('val_dataloader.') for w in where)


def diffusers_folder(folder, weights: str):
    """A diffusers folder layout of SD (no real weights: only the file names are read)."""
    folder.mkdir()
    (folder / 'model_index.json').write_text('{"_class_name": "StableDiffusionPipeline"}')
    for component in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        (folder / component).mkdir()
    (folder / 'tokenizer' / 'vocab.json').write_text('{}')
    for component in ('unet', 'vae', 'text_encoder'):
        (folder / component / weights).write_bytes(b'')
    return folder


def test_variant_only_weights_pass_where_the_labeler_loads_that_variant(tmp_path):
    """fp16-only weights are refused unless ``engine_kwargs.variant='fp16'``, which the engine
    passes to from_pretrained; the components are named together, with one fix."""
    folder = diffusers_folder(tmp_path / 'sd', 'diffusion_pytorch_model.fp16.safetensors')
    cfg = Config(dict(model=dict(data_preprocessor=dict(sd_model=str(folder)))))
    (found,) = preflight.check(cfg, 'test')
    assert found.what.split(': ', 1)[1].startswith(
        'unet/, vae/, text_encoder/ hold only fp16-variant weights '
        "(diffusion_pytorch_model.fp16.safetensors): load with variant='fp16'")
    assert found.what.count('load with') == 1 and found.what.count('save_pretrained') == 1
    # the fix line said only 'pass a Stable Diffusion 1.x / 2.x diffusers folder' (it is one)
    assert found.fix.startswith('where the problem names no fix of its own: another Stable '
                                'Diffusion 1.x / 2.x diffusers folder, --cfg-options ')
    cfg.model.data_preprocessor.engine_kwargs = dict(variant='fp16')
    assert preflight.check(cfg, 'test') == []


def test_the_report_numbers_each_missing_piece_once_from_one():
    """Entries naming the same piece merge, each config key listed once, the first fix kept;
    the report numbers them 1, 2, ..."""
    from mmdiffseg.preflight_data import Missing
    missing = preflight.merge([Missing('data root x', 'make x', ['a']),
                               Missing('weights y', 'get y', ['b']),
                               Missing('data root x', 'make x again', ['c', 'a'])])
    assert [(m.what, m.fix, m.where) for m in missing] == [
        ('data root x', 'make x', ['a', 'c']), ('weights y', 'get y', ['b'])]
    assert preflight.report(missing, 'cfg.py', 'test').splitlines()[:8] == [
        'Pre-flight check: cfg.py cannot test here yet; 2 things to fix first (nothing was '
        'started):', '', '1. data root x', '   needed by: a, c', '   fix: make x',
        '2. weights y', '   needed by: b', '   fix: get y']


def test_a_test_run_does_not_write_the_training_label_cache(tmp_path):
    """A test never writes the label cache of the training pipeline or the labeler: a file in
    the cache folder's place is a problem to train, none to test."""
    (tmp_path / 'file').write_text('')
    cache = dict(cache_dir=str(tmp_path / 'file' / 'cache'), model=str(tmp_path),
                 generator=dict(type='ISeg'))
    cfg = Config(dict(train_dataloader=dict(dataset=dict(pipeline=[
        dict(type='LoadPseudoLabel', cache=cache)]))))
    key = 'train_dataloader.dataset.pipeline.0.cache.cache_dir'
    assert [m.what for m in preflight.check(cfg, 'train') if key in m.where] == [
        f'label cache folder {tmp_path}/file/cache: {tmp_path}/file is a file']
    assert not [m for m in preflight.check(cfg, 'test') if key in m.where]


def test_the_report_is_printed_without_a_local_rank(tmp_path, monkeypatch, capsys):
    """Outside torchrun (no LOCAL_RANK) the one process prints the report, then exits 2."""
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='PascalVOCDataset', data_root=str(tmp_path / 'none'), pipeline=[]))))
    with pytest.raises(SystemExit) as stop:
        preflight.ensure_ready(cfg, 'cfg.py')
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith('Pre-flight check: cfg.py cannot train here yet; ')


def test_image_level_labels_are_matched_to_the_split_only_once_its_folders_are_there(tmp_path):
    """While a folder of the dataset is missing, that folder is the one thing reported: the
    label file's entries are checked against the split once the data is complete."""
    import shutil

    from e2e_helpers import make_voc_root
    from sample_data import shared_path
    root = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'VOCdevkit' / 'VOC2012')
    (tmp_path / 'labels.json').write_text('{}')
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='PascalVOCDataset', data_root=str(root), ann_file='ImageSets/Segmentation/aug.txt',
        img_suffix='.png', data_prefix=dict(img_path='JPEGImages',
                                            seg_map_path='SegmentationClassAug'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='LoadImageLevelLabels', classes='voc',
                       ann_file=str(tmp_path / 'labels.json'))]))))
    assert any('have no entry' in m.what for m in preflight.check(cfg))
    shutil.rmtree(root / 'SegmentationClassAug')
    assert [m.what for m in preflight.check(cfg)] == [
        f'PascalVOCDataset folder {root}/SegmentationClassAug not found']
