"""``waeserver generate``: one note from a bundle to a WAV file.

The style mix is ``NAME=W,...`` (weights 0..2; default: the first style at weight 1), the latent
point ``a,b,c`` or ``random`` (drawn from the standard-normal prior with ``--seed``), the velocity
a MIDI value 0..127, the inverter one the bundle carries (default: its own real-time inverter) or
``gla`` (100-iteration Griffin-Lim, the offline reference).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from waeserver.sound.bundle import Bundle, BundleError

log = logging.getLogger(__name__)

GRIFFIN_LIM = "gla"


def parse_style(text: str | None, bundle: Bundle) -> torch.Tensor:
    """``"flute=0.7,oboe=0.3"`` to a ``[S]`` weight vector; empty or None: the first style at 1."""
    if not text:
        return bundle.style_weights({bundle.styles[0]: 1.0})
    mix: dict[str, float] = {}
    for item in text.split(","):
        name, sep, weight = item.strip().partition("=")
        if not name:
            raise BundleError(f"empty style name in --style {text!r}")
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            raise BundleError(f"style weight {weight!r} for {name} is not a number") from None
        if not math.isfinite(value) or not 0.0 <= value <= 2.0:
            raise BundleError(f"style weight for {name} must be between 0 and 2, got {weight}")
        mix[name] = value
    return bundle.style_weights(mix)


def parse_vector(text: str, size: int, what: str) -> torch.Tensor:
    """``"a,b,c"``: exactly ``size`` finite numbers to ``[size]``; ``what`` names the option."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise BundleError(f"{what} must be {size} comma-separated numbers, got {text!r}") from None
    if len(values) != size or not all(math.isfinite(v) for v in values):
        raise BundleError(f"{what} needs {size} finite numbers for this model, got {text!r}")
    return torch.tensor(values)


def parse_z(text: str | None, latent: int, seed: int | None) -> torch.Tensor:
    """``"a,b,c"`` (exactly ``latent`` numbers) or ``random``/None (prior draw with ``seed``) to ``[D]``."""
    if text is None or text == "random":
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        return torch.randn(latent, generator=gen)
    return parse_vector(text, latent, "--z")


def generate_note(bundle: Bundle, pitch: int, velocity: int = 100, style: torch.Tensor | None = None,
                  z: torch.Tensor | None = None, inverter: str | None = None) -> np.ndarray:
    """One note ``[T]`` float32 at ``bundle.sample_rate``; ``inverter`` a name the bundle carries,
    ``gla``, or None for the bundle's own."""
    if inverter != GRIFFIN_LIM:
        bundle.get_inverter(inverter)   # refuses a name the bundle lacks, listing what it has
    low, high = bundle.pitch_range
    if not low <= int(pitch) <= high:
        raise BundleError(f"pitch {pitch} is outside {bundle.name}'s range {low}..{high}")
    if not 0 <= int(velocity) <= 127:
        raise BundleError(f"velocity must be 0..127, got {velocity}")
    style = parse_style(None, bundle) if style is None else style
    z = torch.zeros(bundle.latent_size) if z is None else z
    args = (torch.tensor([int(pitch)]), torch.tensor([int(velocity) / 127]), style[None], z[None])
    wave = bundle.griffin_lim(*args) if inverter == GRIFFIN_LIM else bundle.synthesize(*args, inverter=inverter)
    return wave[0].float().cpu().numpy()



def write_note(path: Path, wave: np.ndarray, rate: int) -> None:
    """``wave`` as a 16-bit WAV, clipped to full scale."""
    import soundfile as sf

    sf.write(path, np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16")
