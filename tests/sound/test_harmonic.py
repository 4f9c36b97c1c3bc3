"""The harmonic inverter: shapes, exact pitch, the same note alone or in a batch, true gradients,
training and loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from waeserver.dsp.pitch import cents_off, estimate_pitch, midi_to_f0
from waeserver.sound.harmonic import HarmonicConfig, HarmonicInverter
from waeserver.sound.inverter_training import train_inverter
from waeserver.sound.inverters import load_inverter, save_inverter

SR = 22050


def inverter(**overrides) -> HarmonicInverter:
    torch.manual_seed(0)
    return HarmonicInverter(HarmonicConfig(mel_offset=-6.0, mel_scale=3.0, **overrides)).eval()


def synthesize(inv: HarmonicInverter, f0: float, amp: torch.Tensor, dev: torch.Tensor | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
    """The synthesis alone, from controls ``[1, F + 1, K]`` (the frame after the last included)."""
    frames = amp.shape[1]
    dev = torch.zeros_like(amp) if dev is None else dev
    noise = torch.zeros(1, frames, inv.cfg.n_mels) if noise is None else noise
    return inv.overlap_add(inv.spectra(amp, noise, dev, torch.tensor([f0])))[0]


@pytest.mark.parametrize("frames, batch", [(128, 1), (32, 3), (7, 2)])
def test_shapes(frames, batch):
    inv = inverter()
    mel = torch.randn(batch, 128, frames) - 6
    f0 = midi_to_f0(torch.tensor([40, 60, 90][:batch]))
    with torch.no_grad():
        wave = inv(mel, f0)
        amp, noise, dev = inv.controls(mel, f0, inv.count(f0))
    assert wave.shape == (batch, frames * 256) and torch.isfinite(wave).all()
    assert amp.shape == dev.shape == (batch, frames, inv.count(f0)) and noise.shape == (batch, frames, 128)
    assert (amp >= 0).all() and (noise >= 0).all()


@pytest.mark.parametrize("f0", [27.5, 110.0, 261.63, 1760.0])
def test_steady_controls_give_the_sum_of_the_harmonics(f0):
    """Frame by frame in the frequency domain, yet the very waveform of sum_k a_k sin(2 pi k f0 t)."""
    inv = inverter()
    count = inv.count(torch.tensor([f0]))
    levels = 0.01 / torch.arange(1, count + 1)
    wave = synthesize(inv, f0, levels.expand(1, 65, count).clone()).double()
    t = torch.arange(wave.numel(), dtype=torch.float64) / SR
    expected = sum(float(levels[k - 1]) * torch.sin(2 * math.pi * k * f0 * t)
                   for k in range(1, count + 1) if k * f0 * 1.03 < SR / 2)
    error = (wave - expected).norm() / expected.norm()
    assert error < 0.01
    # and every harmonic it writes lies below Nyquist, the highest within the deviation's reach
    assert count * f0 * (1 + inv.cfg.max_deviation) < SR / 2 or count == inv.cfg.max_harmonics


@pytest.mark.parametrize("pitch", [45, 57, 69, 76])
def test_in_tune_with_and_without_a_vibrato(pitch):
    inv = inverter()
    f0 = float(midi_to_f0(torch.tensor([pitch])))
    count = inv.count(torch.tensor([f0]))
    amp = (0.05 / torch.arange(1, count + 1) ** 1.5).expand(1, 129, count).clone()
    steady = synthesize(inv, f0, amp).numpy()
    # a 6 Hz vibrato of 2 % on every harmonic
    t = torch.arange(129) * 256 / SR
    vibrato = (0.02 * torch.sin(2 * math.pi * 6 * t))[None, :, None].expand(1, 129, count)
    wobbling = synthesize(inv, f0, amp, vibrato.clone()).numpy()
    for wave in (steady, wobbling):
        found = estimate_pitch(wave, SR)
        assert found is not None and abs(cents_off(found.hz, pitch)) < 10
    assert not np.allclose(steady, wobbling, atol=1e-4)


def test_the_fundamentals_deviation_averages_to_zero():
    """Whatever the network predicts, the fundamental's deviation has no mean over the note."""
    inv = inverter()
    with torch.no_grad():
        inv.out.weight.normal_(0, 0.5)
        inv.out.bias.normal_(0, 0.5)
        mel = torch.randn(2, 128, 64) - 6
        f0 = torch.tensor([220.0, 330.0])
        _, _, dev = inv.controls(mel, f0, inv.count(f0))
    assert dev.abs().max() > 1e-3
    assert dev[..., 0].mean(dim=1).abs().max() < 1e-6
    assert dev.abs().max() <= 2 * inv.cfg.max_deviation + 1e-6


def test_a_note_alone_sounds_as_in_a_batch():
    """The batch computes as many harmonics as its lowest note needs; the others are silent."""
    inv = inverter()
    mel = torch.randn(3, 128, 16) - 6
    f0 = midi_to_f0(torch.tensor([72, 30, 60]))
    with torch.no_grad():
        together = inv(mel, f0)
        alone = torch.cat([inv(mel[i:i + 1], f0[i:i + 1]) for i in range(3)])
    assert inv.count(f0) > inv.count(f0[:1])
    assert torch.allclose(together, alone, atol=1e-6)


@pytest.mark.parametrize("vibrato", [0.0, 0.02])
def test_the_c_synthesis_is_the_torch_reference(vibrato):
    """At inference (no gradients, CPU) the spectra come from _harmonic.c: the same as torch's, for
    a batch with a low note (bins folded below 0) and one near Nyquist, with noise and deviations
    (the C code reduces the phase to a cycle before its sine: a few 1e-5 apart with a vibrato)."""
    inv = inverter()
    gen = torch.Generator().manual_seed(2)
    f0 = midi_to_f0(torch.tensor([24, 118]))
    count, frames = inv.count(f0), 40
    amp = torch.rand(2, frames, count, generator=gen) * 0.01
    amp[1, :, 2:] = 0.0                      # the high note's harmonics above Nyquist, as controls() gives them
    dev = vibrato * torch.sin(torch.linspace(0, 12, frames))[None, :, None] * torch.rand(2, 1, count, generator=gen)
    noise = torch.rand(2, frames, 128, generator=gen) * 1e-3
    reference = inv.spectra(amp, noise, dev, f0)
    native = inv.spectra_native(amp, noise, dev, f0)
    assert native.dtype == reference.dtype and native.shape == reference.shape
    error = (native - reference).abs().max() / reference.abs().max()
    assert error < (1e-6 if vibrato == 0 else 5e-4), error
    waves = [inv.overlap_add(s) for s in (reference, native)]
    assert float((waves[0] - waves[1]).norm() / waves[0].norm()) < (1e-6 if vibrato == 0 else 2e-4)


def controls_both_ways(inv: HarmonicInverter, mel: torch.Tensor, f0: torch.Tensor, count: int) -> tuple[list, tuple]:
    """The controls by torch (the last frame held for one more) and by C, checked to agree within
    float32 rounding (C's expf and tanhf are not torch's)."""
    by_torch = [torch.cat([c, c[:, -1:]], dim=1) for c in inv.controls(mel, f0, count)]
    in_c = inv.controls_native(mel, f0, count)
    for name, reference, native in zip(("amplitudes", "noise", "deviations"), by_torch, in_c):
        assert native.shape == reference.shape, name
        assert float((native - reference).abs().max() / reference.abs().max()) < 1e-5, name
    return by_torch, in_c


def test_the_c_controls_are_the_torch_reference():
    """After the network, the controls come from _harmonic.c at inference too: torch's (within
    float32 rounding: C's expf and tanhf are not torch's), the last frame held for one more; and
    forward() takes the C road only without gradients."""
    inv = inverter()
    with torch.no_grad():
        inv.out.weight.normal_(0, 0.3)         # deviations, corrections and levels of every size
        inv.out.bias.normal_(0, 0.3)
    f0 = midi_to_f0(torch.tensor([24, 118]))
    count = inv.count(f0)
    mel = torch.randn(2, 128, 16) - 6
    with torch.no_grad():
        by_torch, in_c = controls_both_ways(inv, mel, f0, count)
        # the high note (7 kHz) has one harmonic below Nyquist
        assert by_torch[2].abs().max() > 1e-3
        assert (by_torch[0][1, :, 1:] == 0).all() and (by_torch[0][1, :, 0] > 0).all()
        assert torch.equal(inv(mel, f0), inv.overlap_add(inv.spectra_native(*in_c, f0)))
        by_torch = inv.overlap_add(inv.spectra(*by_torch, f0))
    assert torch.equal(inv(mel, f0).detach(), by_torch)


def test_layered_harmonics_start_as_the_one_partial_inverter():
    """A layer head on a trained inverter (what ``init`` with ``layered_harmonics`` does) changes
    nothing until it is trained: the second partials' shares start at 0."""
    plain = inverter()
    with torch.no_grad():
        plain.out.weight.normal_(0, 0.3)
    layered = inverter(layered_harmonics=24)
    layered.load_state_dict(plain.state_dict(), strict=False)
    f0 = midi_to_f0(torch.tensor([40, 67]))
    mel = torch.randn(2, 128, 16) - 6
    with torch.no_grad():
        assert torch.allclose(layered(mel, f0), plain(mel, f0), atol=1e-7)
        amp, _, dev = layered.controls(mel, f0, layered.count(f0))
    count = layered.count(f0)
    assert amp.shape[-1] == dev.shape[-1] == count + 24
    assert torch.equal(layered.numbers(count)[count:], torch.arange(1, 25))
    assert (amp[..., count:] == 0).all()
    assert torch.allclose(dev[..., count:] - dev[..., :24], torch.full_like(dev[..., :24], 0.006), atol=1e-6)


def test_layered_controls_in_c_are_the_torch_reference():
    """With second partials (shares and offsets of every size), the C controls and synthesis are
    still torch's: partial for partial, and the waveform."""
    inv = inverter(layered_harmonics=40)
    with torch.no_grad():
        for conv in (inv.out, inv.layer_out):
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(0, 0.3)
    f0 = midi_to_f0(torch.tensor([24, 100]))   # the high one: second partials above Nyquist are silent
    count = inv.count(f0)
    mel = torch.randn(2, 128, 16) - 6
    with torch.no_grad():
        by_torch, in_c = controls_both_ways(inv, mel, f0, count)
        assert by_torch[0][:, :, count:].abs().max() > 0
        numbers = inv.numbers(count)
        reference = inv.overlap_add(inv.spectra(*by_torch, f0, numbers))
        assert float((inv(mel, f0) - reference).norm() / reference.norm()) < 2e-4


def test_a_detuned_pair_beats():
    """Two partials of one harmonic an offset apart beat at the offset's frequency (as a soundfont's
    two detuned layers do); one partial does not."""
    inv = inverter()
    frames, f0, offset = 160, 440.0, 0.01           # beats at 4.4 Hz: 227 ms
    one = torch.zeros(1, frames + 1, 1)
    one[..., 0] = 0.1
    pair = torch.full((1, frames + 1, 2), 0.1 / math.sqrt(2))
    dev = torch.zeros(1, frames + 1, 2)
    dev[..., 1] = offset
    noise = torch.zeros(1, frames + 1, inv.cfg.n_mels)
    f = torch.tensor([f0])
    with torch.no_grad():
        steady = inv.overlap_add(inv.spectra(one, noise, torch.zeros_like(one), f))[0]
        beating = inv.overlap_add(inv.spectra(pair, noise, dev, f, torch.tensor([1, 1])))[0]
        native = inv.overlap_add(inv.spectra_native(pair, noise, dev, f, torch.tensor([1, 1])))[0]
    assert torch.allclose(native, beating, atol=1e-5)

    def envelope(wave):   # RMS over 10 ms, away from the ends
        x = wave[2048:-2048]
        return x[:len(x) // 220 * 220].view(-1, 220).pow(2).mean(1).sqrt()

    assert float(envelope(steady).min() / envelope(steady).max()) > 0.95
    env = envelope(beating)
    assert float(env.min() / env.max()) < 0.2
    spectrum = torch.fft.rfft(env - env.mean())
    beat_hz = float(spectrum.abs().argmax()) * 100.0 / len(env)
    assert abs(beat_hz - f0 * offset) < 1.0, beat_hz


def test_gradients_are_the_true_derivatives():
    """Autograd against finite differences, for amplitudes and deviations (a harmonic whose window
    taps start on an odd bin once had its amplitude's gradient reversed)."""
    inv = inverter().double()
    f0 = torch.tensor([293.66], dtype=torch.float64)
    count = inv.count(f0)
    gen = torch.Generator().manual_seed(1)
    amp = torch.rand(1, 9, count, generator=gen, dtype=torch.float64) * 0.01
    dev = torch.rand(1, 9, count, generator=gen, dtype=torch.float64) * 0.01
    noise = torch.zeros(1, 9, 128, dtype=torch.float64)
    target = torch.randn(9 * 256 - 256, generator=gen, dtype=torch.float64) * 0.01

    def loss(a, d):
        wave = inv.overlap_add(inv.spectra(a, noise, d, f0))[0]
        return torch.fft.rfft(wave).abs().sub(torch.fft.rfft(target).abs()).pow(2).sum()

    a, d = amp.clone().requires_grad_(True), dev.clone().requires_grad_(True)
    loss(a, d).backward()
    eps = 1e-7
    for k in range(0, count, max(1, count // 8)):
        step = torch.zeros_like(amp)
        step[0, 4, k] = eps
        with torch.no_grad():
            numeric_a = (loss(amp + step, dev) - loss(amp - step, dev)) / (2 * eps)
            numeric_d = (loss(amp, dev + step) - loss(amp, dev - step)) / (2 * eps)
        assert float(a.grad[0, 4, k]) == pytest.approx(float(numeric_a), rel=1e-3, abs=1e-9)
        assert float(d.grad[0, 4, k]) == pytest.approx(float(numeric_d), rel=1e-2, abs=1e-7)


def test_training_writes_an_inverter_that_loads_and_resumes(tiny_dataset, tmp_path):
    config = {"kind": "harmonic", "steps": 4, "batch_size": 2, "crop_frames": 8, "checkpoint_every": 2,
              "log_every": 1, "mel_weight": 2.0, "model": {"hidden": 8, "max_harmonics": 24}}
    result = train_inverter(tiny_dataset, tmp_path, config, progress=False)
    assert result["step"] == 4 and np.isfinite(result["sc"]) and np.isfinite(result["lsd_db"])
    header, *rows = (tmp_path / "metrics.csv").read_text().splitlines()   # the log-mel term, logged
    assert header.split(",")[-1] == "mel" and all(float(r.split(",")[-1]) > 0 for r in rows)
    again = train_inverter(tiny_dataset, tmp_path, dict(config, steps=6), resume=True, progress=False)
    assert again["step"] == 6 and len((tmp_path / "metrics.csv").read_text().splitlines()) == 7
    loaded = load_inverter(tmp_path)
    assert isinstance(loaded, HarmonicInverter) and loaded.cfg.max_harmonics == 24
    # the dataset's mel scale and normalisation travel with it
    assert loaded.cfg.f_min == 30.0 and loaded.cfg.mel_scale > 0
    mel, f0 = torch.randn(1, 128, 8) - 6, torch.tensor([220.0])
    with torch.no_grad():
        copy = load_inverter(save_inverter(loaded, tmp_path / "copy"))
        assert torch.equal(copy(mel, f0), loaded(mel, f0))


@pytest.mark.parametrize("settings, message", [
    ({"n_fft": 384}, "power of two"),
    ({"kernel_bins": 5}, "even"),
    ({"max_deviation": 0.5}, "max_deviation"),
    ({"layered_harmonics": 200}, "layered_harmonics"),
    ({"hop": 256}, "unknown harmonic inverter settings: hop"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        HarmonicConfig.from_dict(settings)
