"""Mel inverse, Griffin-Lim on a real note, the MCNN, inverter training and the spectral losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waeserver.data.dataset import NoteDataset
from waeserver.dsp.pitch import midi_to_f0
from waeserver.dsp.spectral import MelSpectrogram, griffin_lim, mel_filterbank, mel_to_linear, spectral_convergence
from waeserver.dsp.stft_loss import MultiResolutionSTFTLoss
from waeserver.sound.inverter_training import InverterTrainConfig, random_crops, train_inverter
from waeserver.sound.inverters import load_inverter, new_inverter
from waeserver.sound.mcnn import MCNN, MCNNConfig, Upsample2


@pytest.fixture(scope="module")
def real_note(tiny_dataset):
    """The loudest note of the tiny dataset: (spectral config, wave [1,T], magnitude, log-mel)."""
    ds = NoteDataset(tiny_dataset)
    i = max(range(len(ds)), key=lambda k: float(np.abs(ds.audio(k)).max()))
    wave = torch.from_numpy(ds.audio(i))[None]
    mel = MelSpectrogram(ds.spectral)
    with torch.no_grad():
        return ds.spectral, wave, mel.magnitude(wave), mel(wave)


def test_mel_inverse_reproduces_the_mel_and_the_magnitude(real_note):
    cfg, _, magnitude, logmel = real_note
    linear = mel_to_linear(logmel, cfg)
    assert linear.shape == magnitude.shape
    assert (linear >= 0).all()
    filters = torch.from_numpy(mel_filterbank(cfg))
    remelled = filters @ linear
    target = torch.exp(logmel)
    # the mel of the inverse is the mel we started from, to within 1%
    assert float((remelled - target).norm() / target.norm()) < 0.01
    # and the magnitude itself is close (the mel filterbank loses fine detail at high frequencies)
    assert float(spectral_convergence(linear, magnitude)) < 0.2
    # the non-negative refinement improves on the clamped pseudo-inverse
    rough = mel_to_linear(logmel, cfg, n_iter=0)
    assert float((filters @ rough - target).norm()) > float((remelled - target).norm())


def test_griffin_lim_converges_on_a_real_note(real_note):
    cfg, wave, magnitude, _ = real_note
    mel = MelSpectrogram(cfg)
    errors = []
    for n_iter in (0, 10, 100):
        out = griffin_lim(magnitude, cfg, n_iter=n_iter)
        assert out.shape == wave.shape
        errors.append(float(spectral_convergence(mel.magnitude(out), magnitude)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1


@pytest.mark.parametrize("excitation", [True, False])
def test_mcnn_shapes(excitation):
    channels = [4, 3] if excitation else [4, 3, 2, 2, 2, 1, 1]
    cfg = MCNNConfig(heads=3, channels=channels, excitation=excitation, gain_step=32)
    model = MCNN(cfg)
    f0 = torch.tensor([110.0, 523.0]) if excitation else None
    for frames in (1, 7, 128, 130):      # 130 frames: longer than the noise tables
        with torch.no_grad():
            out = model(torch.randn(2, 128, frames), f0)
        assert out.shape == (2, frames * 256)
        assert torch.isfinite(out).all()
        assert float(out.abs().max()) <= float(model.out_gain.detach().abs()) + 1e-6
    if excitation:
        with pytest.raises(ValueError, match="f0"):
            model(torch.randn(1, 128, 4))
    with pytest.raises(ValueError, match="channel widths"):
        MCNNConfig(channels=[4, 4, 4])
    with pytest.raises(ValueError, match="power of two"):
        MCNNConfig(hop_length=200)
    with pytest.raises(ValueError, match="gain step"):
        MCNNConfig(gain_step=48)


def test_configs_without_a_gain_step_mean_one_gain_a_sample():
    old = MCNNConfig(channels=[16, 8, 8, 4, 4, 2, 2], gain_step=1).to_dict()
    del old["gain_step"]
    cfg = MCNNConfig.from_dict(old)
    assert cfg.gain_step == 1 and cfg.n_layers == 8
    assert MCNNConfig().n_layers == 2


@pytest.mark.parametrize("gain_step", [1, 32])
def test_mcnn_output_is_the_gated_sum_of_its_sources(gain_step):
    """The segment-wise products give the same wave as gains (linear within a segment) times the
    reference sources, summed over the bands."""
    torch.manual_seed(0)
    channels = [4, 2, 2, 2, 2, 1, 1] if gain_step == 1 else [4, 2]
    model = MCNN(MCNNConfig(heads=4, channels=channels, gain_step=gain_step, mel_offset=-6, mel_scale=3)).eval()
    frames, batch = 12, 2
    mel = torch.randn(batch, 128, frames) - 6
    f0 = torch.tensor([97.9989, 1318.51])
    with torch.no_grad():
        for p in model.layers[-1].parameters():
            p.add_(0.3 * torch.randn_like(p))       # heads that do something
        out = model(mel, f0)
        gains = model.gains(mel)                                                    # [B,2*bands,S]
        ends = torch.cat([gains[..., 1:], gains[..., -1:]], dim=-1)
        ramp = torch.arange(gain_step) / gain_step
        per_sample = (gains[..., None] * (1 - ramp) + ends[..., None] * ramp).flatten(2)
        length = frames * 256
        wave = ((per_sample[:, 0::2] * model.harmonic_sources(f0, length)).sum(1)
                + (per_sample[:, 1::2] * model.noise[:, :length]).sum(1))
        expected = model.out_gain * torch.nn.functional.softsign(wave / model.out_gain)
    assert float((out - expected).pow(2).mean().sqrt()) < 1e-4 * float(expected.pow(2).mean().sqrt())


@pytest.mark.parametrize("in_ch, out_ch, kernel, groups", [(16, 32, 4, 8), (16, 16, 4, 8), (64, 32, 6, 8),
                                                          (128, 64, 4, 1)])
def test_upsampling_layer_matches_torchs_transposed_convolution(in_ch, out_ch, kernel, groups):
    layer = Upsample2(in_ch, out_ch, kernel, groups)
    reference = torch.nn.ConvTranspose1d(in_ch, out_ch, kernel, stride=2, padding=(kernel - 2) // 2, groups=groups)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(3, in_ch, 37)
    with torch.no_grad():
        assert torch.allclose(layer(x), reference(x), atol=1e-5)


def test_harmonic_sources_hold_the_harmonics_of_f0_in_each_band():
    model = MCNN(MCNNConfig())
    f0 = 440.0
    with torch.no_grad():
        sources = model.harmonic_sources(torch.tensor([f0]), 22050)[0].double()   # one second: 1 Hz bins
    spectrum = torch.fft.rfft(sources).abs()
    edges = model.cfg.band_edges()
    for b in range(model.cfg.n_bands):
        wanted = [k * f0 for k in range(1, 26) if edges[b] <= k * f0 < edges[b + 1] and k * f0 < 11025]
        peaks = torch.nonzero(spectrum[b] > 0.5 * spectrum[b].max()).flatten().tolist() if wanted else []
        assert peaks == [round(f) for f in wanted]
        rms = float(sources[b].pow(2).mean().sqrt())
        assert rms == pytest.approx(1.0 if wanted else 0.0, abs=0.01)

def test_stft_loss_is_zero_for_the_same_wave_and_grows_with_noise(real_note):
    _, wave, _, _ = real_note
    loss_fn = MultiResolutionSTFTLoss(phase_weight=0.5)
    same, _ = loss_fn(wave, wave)
    near, _ = loss_fn(wave + 0.001 * torch.randn_like(wave), wave)
    far, parts = loss_fn(wave + 0.1 * torch.randn_like(wave), wave)
    assert float(same) < 1e-3 < float(near) < float(far)
    assert set(parts) == {"sc", "mag", "phase"}


@pytest.mark.parametrize("kind", ["mcnn", "harmonic"])
def test_one_training_step_lowers_the_loss(tiny_dataset, kind):
    ds = NoteDataset(tiny_dataset)
    feats = np.ascontiguousarray(ds.features())
    audio = np.stack([ds.audio(i) for i in range(len(ds))])
    pitch = ds.labels()["pitch"]
    mel, wave, f0 = random_crops(feats, audio, pitch, 4, 8, ds.spectral.hop_length, np.random.default_rng(0))
    assert mel.shape == (4, 128, 8) and wave.shape == (4, 8 * 256) and f0.shape == (4,)
    assert set(f0.round().tolist()) <= set(midi_to_f0(torch.from_numpy(pitch)).round().tolist())
    torch.manual_seed(0)
    model = new_inverter(kind, {"mel_offset": float(feats.mean()), "mel_scale": float(feats.std())})
    loss_fn = MultiResolutionSTFTLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before, _ = loss_fn(model(mel, f0), wave)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after, _ = loss_fn(model(mel, f0), wave)
    assert after.item() < before.item()


def test_train_mcnn_writes_weights_and_resumes(tiny_dataset, tmp_path):
    config = {"kind": "mcnn", "steps": 3, "batch_size": 2, "crop_frames": 8, "checkpoint_every": 2,
              "log_every": 1, "model": {"heads": 2, "channels": [2]}}
    result = train_inverter(tiny_dataset, tmp_path, config, progress=False)
    assert result["step"] == 3 and np.isfinite(result["sc"])
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4
    again = train_inverter(tiny_dataset, tmp_path, dict(config, steps=5), resume=True, progress=False)
    assert again["step"] == 5
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 6
    model = load_inverter(tmp_path)
    assert isinstance(model, MCNN)
    assert model(torch.zeros(1, 128, 4), torch.tensor([220.0])).shape == (1, 1024)
    assert InverterTrainConfig.from_dict({"steps": 1}).steps == 1
    # a run started from this one with another setting keeps every tensor whose shape fits
    other = train_inverter(tiny_dataset, tmp_path / "other", {**config, "steps": 1, "lr": 1e-7, "init": str(tmp_path),
                                                               "model": {"lowest_band_edge": 150.0}}, progress=False)
    assert other["step"] == 1
    started = load_inverter(tmp_path / "other")
    assert started.cfg.lowest_band_edge == 150.0 and started.cfg.channels == [2]
    assert torch.allclose(started.layers[0].weight, model.layers[0].weight, atol=1e-4)
