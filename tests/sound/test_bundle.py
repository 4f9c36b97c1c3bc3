"""Bundle save/load round trip and refusal of corrupt or mismatched bundles."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from bundles import make_test_bundle
from safetensors.torch import load_file, save_file

from waeserver.sound.bundle import (
    CARD_FILE,
    WEIGHTS_FILE,
    BundleError,
    load_bundle,
    resolve_bundle_path,
    save_bundle,
    sha256_of,
)


@pytest.fixture(scope="module")
def test_bundle(tmp_path_factory):
    return make_test_bundle(tmp_path_factory.mktemp("models") / "test-bundle")


def inputs(styles: int = 3, latent: int = 3):
    pitch = torch.tensor([48, 60, 72])
    velocity = torch.tensor([0.3, 0.7, 1.0])
    style = torch.eye(3, styles)
    style[1, : min(2, styles)] = 0.5
    z = torch.linspace(-1, 1, 3 * latent).reshape(3, latent)
    return pitch, velocity, style, z


def test_card_describes_the_model(test_bundle):
    card = yaml.safe_load((test_bundle / CARD_FILE).read_text())
    assert card["styles"] == ["piano", "flute", "violin"]
    assert card["latent_size"] == 3 and card["sample_rate"] == 22050
    assert card["weights"]["sha256"] == sha256_of(test_bundle / WEIGHTS_FILE)
    for key in ("attributes", "spectral", "pitch_range", "style_ranges", "training_data", "evaluation",
                "versions", "model", "inverter", "inverters", "normalisation"):
        assert key in card
    b = load_bundle(test_bundle)
    assert (b.styles, b.latent_size, b.sample_rate, b.pitch_range) == (card["styles"], 3, 22050, (36, 96))


def test_round_trip_gives_the_same_sound(test_bundle, tmp_path):
    b = load_bundle(test_bundle)
    wave = b.synthesize(*inputs())
    assert wave.shape == (3, b.n_samples) and wave.dtype == torch.float32
    assert torch.isfinite(wave).all() and float(wave.abs().max()) > 0
    copy = save_bundle(tmp_path / "copy", b.decoder, b.inverters, b.spectral, b.styles,
                       default_inverter=b.default_inverter, info={"pitch_range": [36, 96]})
    again = load_bundle(copy)
    assert torch.equal(again.synthesize(*inputs()), wave)
    assert again.decode_mel(*inputs()).shape == (3, 128, 128)
    assert again.griffin_lim(*inputs(), n_iter=2).shape == wave.shape


def test_names_resolve_under_models_dir(test_bundle, monkeypatch):
    monkeypatch.setattr("waeserver.sound.bundle.MODELS_DIR", test_bundle.parent)
    assert resolve_bundle_path("test-bundle") == test_bundle
    assert load_bundle("test-bundle").name == "test-bundle"
    with pytest.raises(BundleError, match="no model bundle"):
        load_bundle("no-such-model")


def copy_of(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / "b")


def test_tampered_weights_are_refused(test_bundle, tmp_path):
    b = copy_of(test_bundle, tmp_path)
    data = bytearray((b / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (b / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(b)


def test_card_that_disagrees_with_the_weights_is_refused(test_bundle, tmp_path):
    b = copy_of(test_bundle, tmp_path)
    card = yaml.safe_load((b / CARD_FILE).read_text())
    card["model"]["dec_channels"] = 24
    (b / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(BundleError, match="shape"):
        load_bundle(b)
    card["model"]["dec_channels"] = 16
    card["styles"] = ["piano", "flute"]
    (b / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(BundleError, match="style list"):
        load_bundle(b)


def test_weights_with_missing_keys_are_refused_even_with_a_matching_hash(test_bundle, tmp_path):
    b = copy_of(test_bundle, tmp_path)
    tensors = load_file(str(b / WEIGHTS_FILE))
    tensors = {k: v for k, v in tensors.items() if not k.startswith("inverter.harmonic.net.0")}
    save_file(tensors, str(b / WEIGHTS_FILE))
    card = yaml.safe_load((b / CARD_FILE).read_text())
    card["weights"]["sha256"] = sha256_of(b / WEIGHTS_FILE)
    (b / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(BundleError, match="inverter.harmonic weights do not match"):
        load_bundle(b)


def rewrite(bundle, card: dict, tensors: dict | None = None) -> None:
    """A bundle's card (and weights) replaced, with the card's hash made to match."""
    if tensors is not None:
        save_file(tensors, str(bundle / WEIGHTS_FILE))
    card["weights"]["sha256"] = sha256_of(bundle / WEIGHTS_FILE)
    (bundle / CARD_FILE).write_text(yaml.safe_dump(card))


@pytest.mark.parametrize("edit, message", [
    # a card that names an inverter the weights do not hold
    (lambda c: c["inverters"].update(extra=dict(c["inverters"]["harmonic"])), "inverter.extra weights do not match"),
    (lambda c: c.update(inverter="vocoder"), "default inverter 'vocoder' is not among"),
    (lambda c: c["inverters"]["mcnn"].update(kind="wavenet"), "unknown inverter kind 'wavenet'"),
    (lambda c: c["inverters"]["harmonic"]["config"].update(max_harmonics=40), r"inverter.harmonic.out.\w+ has shape"),
    (lambda c: c["inverters"]["harmonic"]["config"].update(hop_length=512), "invalid|disagree"),
    (lambda c: c["inverters"].pop("mcnn"), "tensors the card does not describe"),
    (lambda c: c.update(inverters={}), "non-empty mapping"),
])
def test_cards_whose_inverters_do_not_fit_the_weights_are_refused(test_bundle, tmp_path, edit, message):
    b = copy_of(test_bundle, tmp_path)
    card = yaml.safe_load((b / CARD_FILE).read_text())
    edit(card)
    rewrite(b, card)
    with pytest.raises(BundleError, match=message):
        load_bundle(b)


def test_a_version_1_bundle_still_loads_and_plays_its_mcnn(test_bundle, tmp_path):
    """Bundles made before the harmonic inverter: one ``mcnn`` section, ``mcnn.*`` weights."""
    new = load_bundle(test_bundle)
    b = copy_of(test_bundle, tmp_path)
    card = yaml.safe_load((b / CARD_FILE).read_text())
    card["version"] = 1
    card["mcnn"] = card.pop("inverters")["mcnn"]["config"]
    del card["inverter"]
    tensors = {("mcnn." + k[len("inverter.mcnn."):] if k.startswith("inverter.mcnn.") else k): v
               for k, v in load_file(str(b / WEIGHTS_FILE)).items() if not k.startswith("inverter.harmonic.")}
    rewrite(b, card, tensors)
    old = load_bundle(b)
    assert list(old.inverters) == ["mcnn"] and old.default_inverter == "mcnn"
    assert torch.equal(old.synthesize(*inputs()), new.synthesize(*inputs(), inverter="mcnn"))


def test_an_inverter_the_bundle_lacks_is_refused_with_the_list(test_bundle):
    b = load_bundle(test_bundle)
    with pytest.raises(BundleError, match="has no inverter 'wavenet'; it has: harmonic, mcnn"):
        b.synthesize(*inputs(), inverter="wavenet")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(version=99), "version 99"),
    (lambda c: c.pop("sample_rate"), "lacks sample_rate"),
    (lambda c: c.update(format="something-else"), "not a waeserver bundle"),
])
def test_unknown_or_incomplete_cards_are_refused(test_bundle, tmp_path, edit, message):
    b = copy_of(test_bundle, tmp_path)
    card = yaml.safe_load((b / CARD_FILE).read_text())
    edit(card)
    (b / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(BundleError, match=message):
        load_bundle(b)


def test_missing_files_are_refused(test_bundle, tmp_path):
    b = copy_of(test_bundle, tmp_path)
    (b / WEIGHTS_FILE).unlink()
    with pytest.raises(BundleError, match="lacks weights.safetensors"):
        load_bundle(b)
    (b / CARD_FILE).write_text("- not\n- a mapping\n")
    save_file({"x": torch.zeros(1)}, str(b / WEIGHTS_FILE))
    with pytest.raises(BundleError, match="not a mapping"):
        load_bundle(b)


def test_unknown_style_name_is_refused(test_bundle):
    b = load_bundle(test_bundle)
    assert b.style_weights({"flute": 0.5}).tolist() == [0.0, 0.5, 0.0]
    with pytest.raises(BundleError, match="unknown style 'tuba'"):
        b.style_weights({"tuba": 1.0})


def test_the_autoencoder_summary_is_found_however_deep_rebuilds_nested_it():
    from waeserver.sound.bundle import autoencoder_training

    summary = {"epochs_run": 80, "train_seconds": 267.5}
    nested = {"training": {"autoencoder": "runs/b", "autoencoder_summary": {
        "autoencoder": "runs/a", "autoencoder_summary": summary}}}
    assert autoencoder_training(nested) == summary
    assert autoencoder_training({"training": summary}) == summary
    assert autoencoder_training({"training": {"autoencoder": "runs/a"}}) == {}
    assert autoencoder_training({}) == {}
