"""Model bundle: a card (YAML) plus safetensors weights, loaded without running code from the files.

A bundle is a folder ``models/NAME/``::

    card.yaml              what the model is: styles, attribute sets, latent size, sample rate,
                           spectral settings, pitch range (overall and per style), training data,
                           evaluation figures, versions, the model's config, its real-time
                           inverters (``inverters``: name -> kind and config; ``inverter``: the
                           default one), normalisation, and the sha256 of the weights file
    weights.safetensors    decoder (``decoder.*``) and each inverter's (``inverter.NAME.*``)
                           weights; encoder (``encoder.*``) optional

Card version 1 (bundles made before the harmonic inverter) held one MCNN (``mcnn`` section,
``mcnn.*`` weights); it still loads, as a bundle whose one inverter is ``mcnn``.

Loading checks the card's format version, the weights' hash, and every key and shape of the
weights against the networks the card describes, and refuses anything else with a
:class:`BundleError` that says what is wrong.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import waeserver
from waeserver.dsp.pitch import N_OCTAVES, NOTE_NAMES, midi_to_f0
from waeserver.dsp.spectral import SpectralConfig, griffin_lim, mel_to_linear
from waeserver.model.devices import pick_device
from waeserver.model.wae import Decoder, Encoder, ModelConfig
from waeserver.settings import read_yaml
from waeserver.sound.inverters import build_inverter, describe

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
CARD_FORMAT = "waeserver-bundle"
CARD_VERSION = 2
READABLE_VERSIONS = (1, 2)
CARD_FILE = "card.yaml"
WEIGHTS_FILE = "weights.safetensors"
COMMON_KEYS = ("format", "version", "name", "styles", "latent_size", "sample_rate", "spectral",
               "pitch_range", "model", "weights")
REQUIRED_KEYS = {1: COMMON_KEYS + ("mcnn",), 2: COMMON_KEYS + ("inverters", "inverter")}


class BundleError(ValueError):
    """A bundle that cannot be used, with the reason."""


def resolve_bundle_path(path_or_name: str | Path) -> Path:
    """A folder as given, or a bare name looked up under :data:`MODELS_DIR`."""
    path = Path(path_or_name)
    if path.is_dir() or len(path.parts) > 1:
        return path
    return MODELS_DIR / path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Bundle:
    """A loaded bundle: decoder and real-time inverters on one device, plus the card.

    Shapes: ``pitch [B]`` int64 MIDI, ``velocity [B]`` float 0..1, ``style [B,S]`` float fader
    weights (0..2), ``z [B,D]``; waveforms ``[B, T]`` float32 with ``T = n_frames * hop``.
    """

    def __init__(self, card: dict, path: Path, decoder: Decoder, inverters: dict[str, nn.Module],
                 default_inverter: str, device: torch.device, encoder: Encoder | None = None):
        self.card = card
        self.path = path
        self.name: str = card["name"]
        self.styles: list[str] = list(card["styles"])
        self.latent_size: int = int(card["latent_size"])
        self.sample_rate: int = int(card["sample_rate"])
        self.pitch_range: tuple[int, int] = (int(card["pitch_range"][0]), int(card["pitch_range"][1]))
        self.spectral = SpectralConfig.from_dict(card["spectral"])
        self.device = device
        self.decoder = decoder
        self.inverters = inverters
        self.default_inverter = default_inverter
        self.encoder = encoder

    @property
    def inverter(self) -> nn.Module:
        """The bundle's own real-time inverter (``log-mel [B,M,F], f0 [B] Hz -> [B, T]``)."""
        return self.inverters[self.default_inverter]

    def get_inverter(self, name: str | None) -> nn.Module:
        """An inverter by name (None: the default); an unknown name is refused, listing the bundle's."""
        if name is None:
            return self.inverter
        if name not in self.inverters:
            raise BundleError(f"{self.name} has no inverter {name!r}; it has: {', '.join(self.inverters)}"
                              " (and gla, Griffin-Lim)")
        return self.inverters[name]

    @property
    def n_samples(self) -> int:
        return self.spectral.n_samples

    def style_weights(self, mix: dict[str, float]) -> torch.Tensor:
        """Named fader weights to a ``[S]`` vector in model order; an unknown name is refused."""
        vec = torch.zeros(len(self.styles))
        for name, weight in mix.items():
            if name not in self.styles:
                raise BundleError(f"unknown style {name!r}; {self.name} has: {', '.join(self.styles)}")
            vec[self.styles.index(name)] = float(weight)
        return vec

    def _inputs(self, pitch, velocity, style, z) -> tuple[torch.Tensor, ...]:
        d = self.device
        return (torch.as_tensor(pitch, dtype=torch.int64, device=d),
                torch.as_tensor(velocity, dtype=torch.float32, device=d),
                torch.as_tensor(style, dtype=torch.float32, device=d),
                torch.as_tensor(z, dtype=torch.float32, device=d))

    @torch.no_grad()
    def decode_mel(self, pitch, velocity, style, z) -> torch.Tensor:
        """The decoder alone: log-mel ``[B, M, F]``."""
        pitch, velocity, style, z = self._inputs(pitch, velocity, style, z)
        return self.decoder(z, pitch, style, velocity)

    @torch.no_grad()
    def synthesize(self, pitch, velocity, style, z, inverter: str | None = None) -> torch.Tensor:
        """Decoder then a real-time inverter (the default one unless named): ``[B, T]`` float32
        on :attr:`device`."""
        invert = self.get_inverter(inverter)
        pitch, velocity, style, z = self._inputs(pitch, velocity, style, z)
        return invert(self.decoder(z, pitch, style, velocity), midi_to_f0(pitch))

    @torch.no_grad()
    def griffin_lim(self, pitch, velocity, style, z, n_iter: int = 100) -> torch.Tensor:
        """Decoder then mel inverse and Griffin-Lim (the slow offline reference): ``[B, T]``."""
        mel = self.decode_mel(pitch, velocity, style, z)
        return griffin_lim(mel_to_linear(mel, self.spectral), self.spectral, n_iter=n_iter)


def _check_card(card, where: Path) -> None:
    if not isinstance(card, dict):
        raise BundleError(f"{where}: card is not a mapping")
    if card.get("format") != CARD_FORMAT:
        raise BundleError(f"{where}: not a waeserver bundle card (format {card.get('format')!r})")
    if card.get("version") not in READABLE_VERSIONS:
        raise BundleError(f"{where}: card version {card.get('version')!r} is not supported "
                          f"(this waeserver reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    missing = [k for k in REQUIRED_KEYS[card["version"]] if k not in card]
    if missing:
        raise BundleError(f"{where}: card lacks {', '.join(missing)}")


def _card_inverters(card: dict, where: Path) -> tuple[dict[str, dict], str, dict[str, str]]:
    """The card's inverters (name -> kind and config), the default's name, and each one's
    weight prefix; a version 1 card's one MCNN is ``mcnn`` under ``mcnn.*``."""
    if card["version"] == 1:
        return {"mcnn": {"kind": "mcnn", "config": card["mcnn"]}}, "mcnn", {"mcnn": "mcnn"}
    described = card["inverters"]
    if not isinstance(described, dict) or not described:
        raise BundleError(f"{where}: card's inverters must be a non-empty mapping of name to kind and config")
    for name, entry in described.items():
        if not isinstance(entry, dict) or "kind" not in entry or not isinstance(entry.get("config"), dict):
            raise BundleError(f"{where}: card's inverter {name!r} needs a kind and a config")
    if card["inverter"] not in described:
        raise BundleError(f"{where}: card's default inverter {card['inverter']!r} is not among its "
                          f"inverters ({', '.join(described)})")
    return described, card["inverter"], {name: f"inverter.{name}" for name in described}


def _load_state(module: torch.nn.Module, tensors: dict, prefix: str, where: Path) -> None:
    """Load ``prefix.*`` tensors into ``module``, refusing missing, unexpected or mis-shaped keys."""
    expected = module.state_dict()
    given = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        detail = (f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}")
        raise BundleError(f"{where}: {prefix} weights do not match the card ({detail})")
    for key, value in given.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise BundleError(f"{where}: {prefix}.{key} has shape {tuple(value.shape)}, the card "
                              f"describes {tuple(expected[key].shape)}")
    module.load_state_dict(given)


def load_wae_or_bundle(path: str | Path, device: torch.device):
    """A training run (model.yaml) or a bundle holding its encoder -> (WAE in eval mode, meta), as
    ``waeserver.model.evaluation.evaluate`` reads them. The meta has at least ``variant``,
    ``styles``, ``spectral`` and ``training``."""
    from waeserver.model.evaluation import EvaluateError
    from waeserver.model.training import load_wae
    from waeserver.model.wae import WAE

    path = Path(path)
    if (path / "model.yaml").is_file() or not (path / "card.yaml").is_file():
        return load_wae(path, device)
    bundle = load_bundle(path, device)
    if bundle.encoder is None:
        raise EvaluateError(f"{path}: the bundle has no encoder, so its latent cannot be measured")
    wae = WAE(bundle.decoder.cfg)
    wae.encoder, wae.decoder, wae.discriminator = bundle.encoder, bundle.decoder, None
    return wae.to(device).eval(), {"variant": bundle.decoder.cfg.variant, "styles": bundle.styles,
                                   "spectral": bundle.spectral.to_dict(),
                                   "training": autoencoder_training(bundle.card)}


def autoencoder_training(card: dict) -> dict:
    """The auto-encoder's training summary (epochs run, seconds, best epoch...) in a card: a bundle
    rebuilt from another (``build-model --from-bundle``) nests its source's summary one level deeper
    under ``autoencoder_summary`` for every rebuild."""
    training = card.get("training")
    while isinstance(training, dict) and "epochs_run" not in training \
            and isinstance(training.get("autoencoder_summary"), dict):
        training = training["autoencoder_summary"]
    return training if isinstance(training, dict) and "epochs_run" in training else {}


def load_bundle(path_or_name: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Read, check and load a bundle; refuses anything corrupt or mismatched with :class:`BundleError`."""
    root = resolve_bundle_path(path_or_name)
    card_path, weights_path = root / CARD_FILE, root / WEIGHTS_FILE
    if not root.is_dir():
        raise BundleError(f"no model bundle at {root}")
    for needed in (card_path, weights_path):
        if not needed.is_file():
            raise BundleError(f"{root}: bundle lacks {needed.name}")
    card = read_yaml(card_path, "bundle card", BundleError)
    _check_card(card, root)
    expected_hash = (card["weights"] or {}).get("sha256") if isinstance(card["weights"], dict) else None
    if not expected_hash:
        raise BundleError(f"{root}: card gives no sha256 for the weights")
    actual = sha256_of(weights_path)
    if actual != expected_hash:
        raise BundleError(f"{root}: weights file does not match the card's sha256 "
                          f"(corrupt or altered: {actual[:12]}... != {str(expected_hash)[:12]}...)")
    described, default, prefixes = _card_inverters(card, root)
    try:
        spectral = SpectralConfig.from_dict(card["spectral"])
        model_cfg = ModelConfig.from_dict(card["model"])
        inverters = {name: build_inverter(entry["kind"], entry["config"]) for name, entry in described.items()}
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{root}: card settings are invalid ({exc})") from exc
    if model_cfg.latent != int(card["latent_size"]) or model_cfg.n_styles != len(card["styles"]):
        raise BundleError(f"{root}: card's latent size or style list disagrees with its model config")
    if spectral.sample_rate != int(card["sample_rate"]) or spectral.n_mels != model_cfg.n_mels or any(
            inv.cfg.hop_length != spectral.hop_length or inv.cfg.sample_rate != spectral.sample_rate
            or inv.cfg.n_mels != model_cfg.n_mels for inv in inverters.values()):
        raise BundleError(f"{root}: card's sample rate, hop or mel bands disagree between its sections")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{weights_path}: unreadable weights ({exc})") from exc
    decoder = Decoder(model_cfg)
    _load_state(decoder, tensors, "decoder", root)
    for name, module in inverters.items():
        _load_state(module, tensors, prefixes[name], root)
    known = ("decoder.", "encoder.") + tuple(p + "." for p in prefixes.values())
    stray = sorted({k.rsplit(".", 1)[0] for k in tensors if not k.startswith(known)})
    if stray:
        raise BundleError(f"{root}: weights hold tensors the card does not describe ({', '.join(stray[:3])})")
    encoder = None
    if any(k.startswith("encoder.") for k in tensors):
        encoder = Encoder(model_cfg)
        _load_state(encoder, tensors, "encoder", root)
    dev = pick_device(device)
    for module in (decoder, encoder, *inverters.values()):
        if module is not None:
            module.to(dev).eval()
    log.info("loaded bundle %s (%d styles, latent %d, %d Hz) on %s", card["name"], len(card["styles"]),
             model_cfg.latent, spectral.sample_rate, dev)
    return Bundle(card, root, decoder, inverters, default, dev, encoder)


def save_bundle(out: str | Path, decoder: Decoder, inverters: dict[str, nn.Module], spectral: SpectralConfig,
                styles: list[str], *, default_inverter: str | None = None, name: str | None = None,
                encoder: Encoder | None = None, info: dict | None = None) -> Path:
    """Write ``out/weights.safetensors`` and ``out/card.yaml``; returns ``out``.

    ``inverters`` maps names to real-time inverters; ``default_inverter`` (else the first) is the
    one the bundle plays with. ``info`` adds or overrides card entries: ``attributes``,
    ``pitch_range``, ``style_ranges``, ``training_data``, ``evaluation``, ...
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not inverters:
        raise BundleError("a bundle needs at least one real-time inverter")
    default_inverter = default_inverter or next(iter(inverters))
    if default_inverter not in inverters:
        raise BundleError(f"default inverter {default_inverter!r} is not among {', '.join(inverters)}")
    model_cfg: ModelConfig = decoder.cfg
    if model_cfg.n_styles != len(styles):
        raise BundleError(f"decoder has {model_cfg.n_styles} styles, {len(styles)} names given")
    parts = [("decoder", decoder), ("encoder", encoder)] + [(f"inverter.{k}", m) for k, m in inverters.items()]
    tensors = {}
    for prefix, module in parts:
        if module is not None:
            tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous().float() if v.is_floating_point()
                            else v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    weights_path = out / WEIGHTS_FILE
    save_file(tensors, str(weights_path), metadata={"format": CARD_FORMAT})
    card = {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "name": name or out.name,
        "styles": list(styles),
        "attributes": {"pitch_classes": list(NOTE_NAMES), "octaves": list(range(N_OCTAVES)),
                       "dynamics": ["p", "mf", "ff"]},
        "latent_size": model_cfg.latent,
        "sample_rate": spectral.sample_rate,
        "spectral": spectral.to_dict(),
        "pitch_range": [21, 108],
        "style_ranges": {},
        "training_data": {},
        "evaluation": {},
        "versions": {"waeserver": waeserver.__version__, "torch": torch.__version__.split("+")[0]},
        "model": model_cfg.to_dict(),
        "inverter": default_inverter,
        "inverters": {k: describe(m) for k, m in inverters.items()},
        "normalisation": {"decoder_mel_offset": model_cfg.mel_offset, "decoder_mel_scale": model_cfg.mel_scale},
    }
    card.update(info or {})
    card["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_of(weights_path),
                       "parts": sorted({k.split(".")[0] for k in tensors}),
                       "parameters": int(sum(v.numel() for v in tensors.values()))}
    (out / CARD_FILE).write_text(yaml.safe_dump(card, sort_keys=False))
    for path in (weights_path, out / CARD_FILE):
        path.chmod(0o644)  # safetensors writes 0600; a shipped bundle is read by everyone
    return out

