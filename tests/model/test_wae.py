"""The WAE-Fader modules and losses: shapes, conditioning, MMD, the alpha schedule."""

from __future__ import annotations

import math

import pytest
import torch

from waeserver.dsp.pitch import octave_of, pitch_class
from waeserver.model.losses import alpha_schedule, discriminator_loss, fader_loss, rbf_mmd, reconstruction_loss
from waeserver.model.wae import VARIANTS, WAE, ModelConfig

torch.set_num_threads(1)
S = 4


def _inputs(batch: int = 3):
    torch.manual_seed(0)
    mel = torch.randn(batch, 128, 128) * 2 - 6
    pitch = torch.tensor([21, 60, 108][:batch])
    style = torch.nn.functional.one_hot(torch.arange(batch) % S, S).float()
    velocity = torch.tensor([0.3, 0.6, 0.9][:batch])
    return mel, pitch, style, velocity


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_of_every_variant(variant):
    wae = WAE(ModelConfig(n_styles=S, variant=variant)).eval()
    mel, pitch, style, velocity = _inputs()
    z = wae.encoder(mel)
    assert z.shape == (3, 3)
    out = wae.decoder(z, pitch, style, velocity)
    assert out.shape == (3, 128, 128)
    assert torch.isfinite(out).all()
    assert (wae.discriminator is not None) == (variant == "wae-fader")
    if wae.discriminator is not None:
        assert wae.discriminator(z).shape == (3, S)


def test_latent_size_and_frames_are_configurable():
    wae = WAE(ModelConfig(n_styles=S, latent=8, n_frames=64, n_mels=80, start_frames=4)).eval()
    z = wae.encoder(torch.randn(2, 80, 64))
    assert z.shape == (2, 8)
    assert wae.decoder(z, torch.tensor([60, 61]), torch.eye(S)[:2], torch.tensor([0.5, 0.5])).shape == (2, 80, 64)


def test_style_input_changes_the_decoded_spectrogram_only_where_used():
    z = torch.randn(1, 3)
    pitch, velocity = torch.tensor([60]), torch.tensor([0.7])
    a, b = torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0, 0, 1.0, 0]])
    for variant, changes in (("wae-fader", True), ("wae-style", True), ("wae-note", False), ("wae-mmd", False)):
        torch.manual_seed(1)
        dec = WAE(ModelConfig(n_styles=S, variant=variant)).eval().decoder
        with torch.no_grad():
            diff = (dec(z, pitch, a, velocity) - dec(z, pitch, b, velocity)).abs().max().item()
        assert (diff > 1e-4) == changes, variant


def test_style_enters_linearly_so_mixes_sit_between_styles():
    cond = WAE(ModelConfig(n_styles=S)).decoder.conditions
    pitch, vel = torch.tensor([60]), torch.tensor([0.5])
    a, b = torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0, 1.0, 0, 0]])
    mid = cond(pitch, 0.5 * a + 0.5 * b, vel)
    assert torch.allclose(mid, 0.5 * cond(pitch, a, vel) + 0.5 * cond(pitch, b, vel), atol=1e-6)
    over = cond(pitch, 2 * a, vel) - cond(pitch, a, vel)
    assert over.abs().max() > 0


def test_note_variants_need_their_conditions():
    dec = WAE(ModelConfig(n_styles=S, variant="wae-fader")).decoder
    with pytest.raises(ValueError, match="pitch"):
        dec(torch.randn(1, 3))
    with pytest.raises(ValueError, match="style"):
        dec(torch.randn(1, 3), torch.tensor([60]))
    assert WAE(ModelConfig(variant="wae-mmd")).decoder(torch.randn(2, 3)).shape == (2, 128, 128)


def test_pitch_class_and_octave_from_midi():
    pitch = torch.tensor([0, 12, 21, 59, 60, 71, 108, 127])
    assert pitch_class(pitch).tolist() == [0, 0, 9, 11, 0, 11, 0, 7]
    assert octave_of(pitch).tolist() == [0, 0, 0, 3, 4, 4, 8, 8]
    assert [octave_of(p) for p in pitch.tolist()] == [0, 0, 0, 3, 4, 4, 8, 8]   # the dataset's labels


def test_config_round_trip_and_refusals():
    cfg = ModelConfig(n_styles=12, latent=4, variant="wae-note", mel_offset=-6.5, mel_scale=2.5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="variant"):
        ModelConfig(variant="vae")
    with pytest.raises(ValueError, match="unknown model settings"):
        ModelConfig.from_dict({"n_styles": 2, "colour": "red"})
    with pytest.raises(ValueError, match="power of two"):
        ModelConfig(n_frames=100)


def test_normalisation_is_undone_by_the_decoder():
    torch.manual_seed(0)
    plain = WAE(ModelConfig(variant="wae-mmd")).eval()
    torch.manual_seed(0)
    shifted = WAE(ModelConfig(variant="wae-mmd", mel_offset=-5.0, mel_scale=3.0)).eval()
    z = torch.randn(2, 3)
    with torch.no_grad():
        assert torch.allclose(shifted.decoder(z), plain.decoder(z) * 3.0 - 5.0, atol=1e-5)
        mel = torch.randn(2, 128, 128)
        assert torch.allclose(shifted.encoder(mel * 3.0 - 5.0), plain.encoder(mel), atol=1e-4)


def test_alpha_schedule():
    assert alpha_schedule(0.0) == 0.0
    assert alpha_schedule(0.099) == 0.0
    assert alpha_schedule(0.1) == 0.0
    assert alpha_schedule(0.3) == pytest.approx(2.0)
    assert alpha_schedule(0.5) == 4.0
    assert alpha_schedule(0.9) == 4.0
    assert alpha_schedule(1.0) == 4.0
    values = [alpha_schedule(p / 100) for p in range(101)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert alpha_schedule(0.4, pre_classification=0.2, max_alpha=2.0, ramp_end=0.6) == pytest.approx(1.0)


def test_mmd_is_small_for_the_prior_and_grows_with_mismatch():
    gen = torch.Generator().manual_seed(0)
    prior = torch.randn(256, 3, generator=gen)
    same = rbf_mmd(torch.randn(256, 3, generator=gen), prior)
    shifted = rbf_mmd(torch.randn(256, 3, generator=gen) + 1.5, prior)
    collapsed = rbf_mmd(torch.zeros(256, 3) + 0.01 * torch.randn(256, 3, generator=gen), prior)
    assert abs(same.item()) < 0.02
    assert shifted.item() > 10 * abs(same.item())
    assert collapsed.item() > 10 * abs(same.item())


def test_losses():
    x = torch.zeros(2, 4, 4)
    assert reconstruction_loss(x + 2, x, scale=4.0).item() == pytest.approx(0.5)
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0]])
    assert discriminator_loss(logits, torch.tensor([0, 1])).item() < 0.05
    assert fader_loss(torch.zeros(2, 3)).item() == pytest.approx(math.log(3))
    assert fader_loss(logits).item() > math.log(3)
