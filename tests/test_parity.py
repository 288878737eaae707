"""Our model against transformers' on random tiny models of both families: logits within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from model.pytorch.checkpoint import load_checkpoint
from model.pytorch.wav2vec2 import Wav2Vec2ForPreTraining

from conftest import save_tiny_hf_model

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def models(hf_ctc_folder):
    reference = transformers.Wav2Vec2ForCTC.from_pretrained(hf_ctc_folder).eval()
    return reference, load_checkpoint(hf_ctc_folder)


def test_single_input_logits_match(models):
    reference, ours = models
    generator = torch.Generator().manual_seed(1)
    for samples in (400, 401, 5000, 48000):  # 400 samples is the shortest input with one frame
        audio = torch.randn(1, samples, generator=generator)
        with torch.no_grad():
            expected = reference(audio).logits
            actual = ours.model(audio)
        assert actual.shape == expected.shape
        assert torch.max(torch.abs(actual - expected)).item() < TOLERANCE


def test_padded_batch_logits_match(models, family):
    """Padded batches as each family is run: with an attention mask for the layer-norm family,
    zero padding and no mask for the group-norm family (as Hugging Face's processors do)."""
    reference, ours = models
    generator = torch.Generator().manual_seed(2)
    lengths = [32000, 20000, 7001]
    audio = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        audio[row, :length] = torch.randn(length, generator=generator)
        mask[row, :length] = 1
    attention_mask = mask if ours.features.return_attention_mask else None
    with torch.no_grad():
        expected = reference(audio, attention_mask=attention_mask).logits
        actual = ours.model(audio, attention_mask=attention_mask)
    assert torch.max(torch.abs(actual - expected)).item() < TOLERANCE
    if attention_mask is not None:
        # With a mask, each row equals the same utterance run alone, up to its own frames.
        frames = [ours.config.num_frames(length) for length in lengths]
        for row, length in enumerate(lengths):
            with torch.no_grad():
                alone = ours.model(audio[row : row + 1, :length])
            assert torch.max(torch.abs(actual[row, : frames[row]] - alone[0])).item() < 1e-4


def test_greedy_transcripts_match_batch_decode(models, hf_ctc_folder):
    reference, ours = models
    processor = transformers.Wav2Vec2Processor.from_pretrained(hf_ctc_folder)
    generator = torch.Generator().manual_seed(3)
    audio = torch.randn(4, 24000, generator=generator)
    with torch.no_grad():
        expected = processor.batch_decode(reference(audio).logits.argmax(-1))
        actual = [ours.vocab.greedy_decode(logits) for logits in ours.model(audio).numpy()]
    assert actual == expected
    assert all(len(text) > 3 for text in actual), "random tiny models should emit text, or the check says nothing"


def test_pretraining_model_matches(tmp_path, family):
    folder = save_tiny_hf_model(tmp_path, family, architecture="Wav2Vec2ForPreTraining")
    reference = transformers.Wav2Vec2ForPreTraining.from_pretrained(folder).eval()
    ours = load_checkpoint(folder)
    assert isinstance(ours.model, Wav2Vec2ForPreTraining)
    generator = torch.Generator().manual_seed(4)
    audio = torch.randn(2, 16000, generator=generator)
    mask_time_indices = torch.rand(2, 49, generator=generator) < 0.5
    with torch.no_grad():
        expected = reference(audio, mask_time_indices=mask_time_indices)
        actual = ours.model(audio, mask_time_indices=mask_time_indices)
    for name in ("projected_states", "projected_quantized_states", "codevector_perplexity"):
        difference = torch.max(torch.abs(getattr(actual, name) - getattr(expected, name))).item()
        assert difference < TOLERANCE, name
    assert np.isfinite(actual.codevector_perplexity.item()) and actual.codevector_perplexity.item() > 1


def test_padding_stays_out_of_group_norm_statistics(models, family):
    """With an attention mask, each row of a padded batch equals the utterance run alone, in training
    (gradients too) and in inference; the group norm's masked statistics equal each utterance's own."""
    from model.pytorch.modules import ConvLayer

    model = models[1].model
    lengths = [16000, 12345, 9000]
    generator = torch.Generator().manual_seed(0)
    audio = [torch.randn(n, generator=generator) for n in lengths]
    batch = torch.zeros(len(audio), max(lengths))
    mask = torch.zeros(len(audio), max(lengths), dtype=torch.long)
    for row, samples in enumerate(audio):
        batch[row, : len(samples)], mask[row, : len(samples)] = samples, 1
    model.eval()
    with torch.no_grad():
        together = model(batch, mask)
        for row, samples in enumerate(audio):
            alone = model(samples[None], torch.ones(1, len(samples), dtype=torch.long))
            frames = alone.shape[1]
            assert torch.allclose(together[row, :frames], alone[0], atol=1e-4), row

    layer = model.wav2vec2.feature_extractor.conv_layers[0]
    assert isinstance(layer, ConvLayer)
    if family == "base":  # group norm: the masked statistics equal each utterance's native group norm, and gradients
        x = batch[:, None, :].clone().requires_grad_()
        norm = layer.layer_norm
        batched, out_lengths = layer(x, torch.tensor(lengths))
        weights = torch.randn(batched.shape, generator=generator)
        gradient, *parameter_gradients = torch.autograd.grad(
            sum(
                (batched[row, :, :frames] * weights[row, :, :frames]).sum()
                for row, frames in enumerate(out_lengths.tolist())
            ),
            (x, norm.weight, norm.bias, layer.conv.weight),
        )
        summed = [torch.zeros_like(g) for g in parameter_gradients]
        for row, (samples, frames) in enumerate(zip(audio, out_lengths.tolist())):
            alone = samples[None, None, :].clone().requires_grad_()
            native = layer.activation(norm(layer.conv(alone)))
            assert native.shape[-1] == frames
            assert torch.allclose(batched[row, :, :frames], native[0], atol=1e-5), row
            gradient_alone, *parameter_alone = torch.autograd.grad(
                (native[0] * weights[row, :, :frames]).sum(), (alone, norm.weight, norm.bias, layer.conv.weight)
            )
            assert torch.allclose(gradient[row, 0, : len(samples)], gradient_alone[0, 0], atol=1e-4), row
            assert not gradient[row, 0, len(samples) :].any()  # padding has no say
            summed = [total + g for total, g in zip(summed, parameter_alone)]
        for name, together, apart in zip(("norm weight", "norm bias", "conv weight"), parameter_gradients, summed):
            assert torch.allclose(together, apart, rtol=1e-4, atol=1e-3), name


def test_masked_channel_norm_gradient_is_exact():
    """The masked norm's hand-written backward against finite differences (float64), padding included."""
    from types import SimpleNamespace

    from model.pytorch.modules import masked_channel_norm

    generator = torch.Generator().manual_seed(0)
    valid = torch.arange(9)[None, None, :] < torch.tensor([9, 5, 1])[:, None, None]
    x = (3 * torch.randn(3, 4, 9, generator=generator, dtype=torch.float64) + 1).requires_grad_()
    weight = torch.randn(4, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=generator, dtype=torch.float64, requires_grad=True)

    def norm(x, weight, bias):  # only the valid steps are defined
        return masked_channel_norm(x, valid, SimpleNamespace(weight=weight, bias=bias, eps=1e-5)) * valid

    assert torch.autograd.gradcheck(norm, (x, weight, bias))
