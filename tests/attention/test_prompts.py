"""Token positions with the real CLIP tokenizers, prompt templates, Cat-Cross enhancement."""
import pytest
import torch
from transformers import CLIPTokenizer

from mmdiffseg.attention import enhance_class_tokens, token_positions
from mmdiffseg.attention.prompts import prompt_token_ids


@pytest.fixture(params=['stable-diffusion-v1-4', 'stable-diffusion-2-1-base'])
def tokenizer(request, sd_config_dir):
    return CLIPTokenizer.from_pretrained(sd_config_dir(request.param) / 'tokenizer')


def test_real_token_ids(tokenizer):
    assert prompt_token_ids(tokenizer, 'a photo of a cat') == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer('potted plant', add_special_tokens=False).input_ids == [48581, 3912]


def test_padding_differs_between_sd1_and_sd2(sd_config_dir):
    pads = {name: CLIPTokenizer.from_pretrained(sd_config_dir(name) / 'tokenizer')(
        '', padding='max_length', max_length=77).input_ids[2:4]
        for name in ('stable-diffusion-v1-4', 'stable-diffusion-2-1-base')}
    assert pads == {'stable-diffusion-v1-4': [49407, 49407], 'stable-diffusion-2-1-base': [0, 0]}


def test_positions_of_single_and_multi_token_names(tokenizer):
    prompt = 'A photograph of a Cat and a potted plant and a tv monitor and a dining table'
    positions = token_positions(tokenizer, prompt, ['cat', 'Potted Plant', 'tv monitor', 'dining table'])
    assert positions == {'cat': [5], 'Potted Plant': [8, 9], 'tv monitor': [12, 13],
                         'dining table': [16, 17]}
    ids = prompt_token_ids(tokenizer, prompt)
    assert ids[8:10] == [48581, 3912]
    assert token_positions(tokenizer, 'a cat and a cat', ['cat']) == {'cat': [2]}  # first occurrence


def test_missing_or_truncated_class_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match=r"class 'horse'.*'a photo of a cat'"):
        token_positions(tokenizer, 'a photo of a cat', ['horse'])
    with pytest.raises(ValueError, match="class 'cats'"):
        token_positions(tokenizer, 'a photo of a cat', ['cats'])
    long_prompt = 'a photo of ' + 'very ' * 80 + 'cat'  # 'cat' falls beyond the 77 tokens
    with pytest.raises(ValueError, match=r'beyond the first 77 tokens of its prompt \(8\d tokens'):
        token_positions(tokenizer, long_prompt, ['cat'])


def test_a_class_cut_off_is_not_read_off_a_longer_names_words(tokenizer):
    """ADE20K lists 'screen door' before 'screen': with 'screen' past the 77 tokens, it read
    the 'screen' of 'screen door' and the image was labelled as fine. Within the tokens, a name
    found only inside a longer one is still read there (nothing of its own was cut off)."""
    prompt = 'a photo of a screen door and ' + 'very ' * 80 + 'screen'
    with pytest.raises(ValueError, match=r"class 'screen' lies beyond the first 77 tokens"):
        token_positions(tokenizer, prompt, ['screen door', 'screen'])
    assert token_positions(tokenizer, 'a photo of a screen door', ['screen door', 'screen']) == {
        'screen door': [5, 6], 'screen': [5]}


def test_enhance_class_tokens_scales_only_the_selected_tokens():
    emb = torch.arange(2 * 6 * 2, dtype=torch.float32).view(2, 6, 2)
    positions = [{'cat': [2], 'potted plant': [4, 5]}, {'dining table': [1, 2]}]
    out = enhance_class_tokens(emb, positions, 1.6, token_offsets={'potted plant': [1]})
    factor = torch.ones(2, 6, 1)
    factor[0, [2, 5]] = 1.6
    factor[1, [1, 2]] = 1.6
    torch.testing.assert_close(out, emb * factor)
    assert enhance_class_tokens(emb, positions, 1.0) is emb
    with pytest.raises(ValueError, match=r"token_offsets\['cat'\]"):
        enhance_class_tokens(emb, positions, 1.6, token_offsets={'cat': [1]})


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_embeddings_are_enhanced_by_the_factor_itself(dtype):
    """As the release's in-place ``emb[:, idx] *= 1.6`` on float16 embeddings: the product in
    float32, rounded once (a float16 factor is 1.599609375, which moved 37% of the values)."""
    emb = (torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(0)) * 2).to(dtype)
    out = enhance_class_tokens(emb, [{'cat': [4]}], 1.6)
    released = emb.clone()
    released[:, [4]] *= 1.6
    assert out.dtype == dtype and torch.equal(out, released)


@pytest.mark.parametrize('name', ['stable-diffusion-v1-4', 'stable-diffusion-2-1-base'])
def test_repeated_prompts_are_encoded_once_with_the_same_rows(tiny_engine, name):
    from mmdiffseg.attention import encode_prompts
    engine = tiny_engine(name)
    batches = []
    hook = engine.text_encoder.register_forward_pre_hook(lambda m, a: batches.append(len(a[0])))
    prompts = ['', 'a photo of a cat', '', 'a photo of a dog', 'a photo of a cat', '']
    encoded = encode_prompts(engine.tokenizer, engine.text_encoder, prompts)
    hook.remove()
    assert batches == [3] and encoded.shape[0] == len(prompts)
    for prompt, row in zip(prompts, encoded):
        alone = encode_prompts(engine.tokenizer, engine.text_encoder, [prompt])[0]
        torch.testing.assert_close(row, alone, rtol=1e-5, atol=1e-6)
    assert not torch.equal(encoded[0], encoded[1])


def test_a_name_inside_a_longer_one_takes_its_own_occurrence(tokenizer):
    """'dog' named after 'hot dog' is the standalone word, whatever the order of the names;
    without another occurrence it shares the longer name's token; case variants share one."""
    prompt = 'a photo of hot dog and dog and teddy bear and bear'
    expected = {'hot dog': [4, 5], 'dog': [7], 'teddy bear': [9, 10], 'bear': [12]}
    for names in (['hot dog', 'dog', 'teddy bear', 'bear'],
                  ['dog', 'bear', 'hot dog', 'teddy bear']):
        assert token_positions(tokenizer, prompt, names) == expected
    assert token_positions(tokenizer, 'a photo of hot dog', ['dog', 'hot dog']) == {
        'dog': [5], 'hot dog': [4, 5]}
    assert token_positions(tokenizer, 'a cat and a cat', ['cat', 'Cat']) == {'cat': [2], 'Cat': [2]}


def test_a_name_overlapping_a_longer_one_past_its_first_token_takes_its_free_occurrence(tokenizer):
    """An occurrence is taken when ANY of its tokens belongs to a longer name, not only its first:
    'hot dog' whose 'dog' is the first token of 'dog house roof' moves to its other occurrence."""
    prompt = 'a photo of hot dog house roof and hot dog'
    assert prompt_token_ids(tokenizer, prompt)[4:11] == prompt_token_ids(
        tokenizer, 'hot dog house roof and hot dog')[1:-1]  # one token per word
    assert token_positions(tokenizer, prompt, ['hot dog', 'dog house roof']) == {
        'hot dog': [9, 10], 'dog house roof': [5, 6, 7]}


def test_a_capitalised_class_past_the_77_tokens_is_named_as_truncated(tokenizer):
    """The truncation message names a capitalised class found past the 77 tokens."""
    long_prompt = 'a photo of ' + 'very ' * 80 + 'Cat'
    with pytest.raises(ValueError, match=r"class 'Cat' lies beyond the first 77 tokens"):
        token_positions(tokenizer, long_prompt, ['Cat'])


@pytest.mark.parametrize('name', ['stable-diffusion-v1-4', 'stable-diffusion-2-1-base'])
def test_encoded_rows_are_the_unmasked_padded_encoder_output(tiny_engine, name):
    """As Stable Diffusion pipelines condition the U-Net: the prompt padded to 77 tokens, the text
    encoder called without an attention mask (a mask would change the padding rows)."""
    from mmdiffseg.attention import encode_prompts
    engine = tiny_engine(name)
    prompts = ['a photo of a cat', '']
    ids = engine.tokenizer(prompts, padding='max_length', max_length=77,
                           return_tensors='pt').input_ids
    with torch.no_grad():
        expected = engine.text_encoder(ids)[0]
    encoded = encode_prompts(engine.tokenizer, engine.text_encoder, prompts)
    assert encoded.shape == expected.shape == (2, 77, expected.shape[-1])
    torch.testing.assert_close(encoded, expected, rtol=0, atol=0)


def test_a_class_absent_from_a_long_prompt_is_not_called_truncated(tokenizer):
    """A prompt past 77 tokens that lacks the class altogether gets the 'does not occur' error, not
    the truncation one (which would send the user to shorten a prompt that never had it)."""
    long_prompt = 'a photo of ' + 'very ' * 80 + 'cat'
    with pytest.raises(ValueError, match=r"class 'horse' \(tokens \[\d+\]\) does not occur"):
        token_positions(tokenizer, long_prompt, ['horse'])


def test_an_empty_class_name_is_refused(tokenizer):
    """An empty name has no tokens: refused by name, never placed at no position."""
    with pytest.raises(ValueError, match=r"class name '' has no tokens"):
        token_positions(tokenizer, 'a photo of a cat', ['cat', ''])


@pytest.mark.parametrize('name', ['stable-diffusion-v1-4', 'stable-diffusion-2-1-base'])
def test_a_prompt_past_77_tokens_is_encoded_as_its_first_77(tiny_engine, name):
    """As diffusers' pipelines: the tokens past the encoder's 77 positions are cut off (the text
    encoder has no position for them), so prompts differing only there encode alike."""
    from mmdiffseg.attention import encode_prompts
    engine = tiny_engine(name)
    words = ' '.join(['cat'] * 80)
    encoded = encode_prompts(engine.tokenizer, engine.text_encoder,
                             [f'{words} dog', f'{words} car', 'a dog'])
    assert encoded.shape[:2] == (3, 77)
    torch.testing.assert_close(encoded[0], encoded[1], rtol=0, atol=0)
    assert not torch.equal(encoded[0], encoded[2])


def test_token_offsets_outside_a_class_are_refused():
    """A negative offset would count back from the class's last token (another word's token
    enhanced without a word)."""
    from mmdiffseg.attention.prompts import selected_tokens
    assert selected_tokens('potted plant', [5, 6], {'potted plant': [1]}) == [6]
    for offsets in ([-1], [2]):
        with pytest.raises(ValueError, match=r"token_offsets\['potted plant'\] = .* pass offsets "
                                             r'in 0\.\.1'):
            selected_tokens('potted plant', [5, 6], {'potted plant': offsets})
