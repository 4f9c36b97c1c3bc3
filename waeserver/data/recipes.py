"""Soundfont dataset presets, as plain data.

A preset lists styles; each style is a General MIDI program played over a pitch range at some
velocities, held for ``hold_s`` seconds before release. Programs are 0-based GM numbers.
Ranges are the instruments' real (sounding) ranges, so no style is asked for notes it cannot play.
"""

from __future__ import annotations

SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts")

DYNAMICS = {"p": 40, "mf": 80, "ff": 120}

PRESETS: dict[str, dict] = {
    # The 12 timbres of the reference study, over their real ranges, at three dynamics.
    "orchestra12": {
        "soundfont": "FluidR3_GM",
        "velocities": [40, 80, 120],
        "hold_s": 1.0,
        "styles": {
            "piano": {"program": 0, "low": 21, "high": 108},
            "oboe": {"program": 68, "low": 58, "high": 91},
            "english_horn": {"program": 69, "low": 52, "high": 81},
            "flute": {"program": 73, "low": 60, "high": 96},
            "bassoon": {"program": 70, "low": 34, "high": 75},
            "violin": {"program": 40, "low": 55, "high": 100},
            "alto_sax": {"program": 65, "low": 49, "high": 81},
            "trombone": {"program": 57, "low": 40, "high": 72},
            "clarinet": {"program": 71, "low": 50, "high": 94},
            "french_horn": {"program": 60, "low": 34, "high": 77},
            "cello": {"program": 42, "low": 36, "high": 76},
            "trumpet": {"program": 56, "low": 52, "high": 82},
        },
    },
    # Playing techniques as styles. Strings on the violin's range: arco is GM 40 (Violin) held,
    # staccato is GM 40 released after 0.12 s, tremolo is GM 44 (Tremolo Strings), pizzicato
    # GM 45 (Pizzicato Strings). Trumpet open is GM 56 (Trumpet), muted GM 59 (Muted Trumpet).
    "techniques": {
        "soundfont": "FluidR3_GM",
        "velocities": [40, 80, 120],
        "hold_s": 1.0,
        "styles": {
            "arco": {"program": 40, "low": 55, "high": 96},
            "staccato": {"program": 40, "low": 55, "high": 96, "hold_s": 0.12},
            "tremolo": {"program": 44, "low": 55, "high": 96},
            "pizzicato": {"program": 45, "low": 55, "high": 96},
            "trumpet_open": {"program": 56, "low": 52, "high": 82},
            "trumpet_muted": {"program": 59, "low": 52, "high": 82},
        },
    },
    # A few instruments and pitches from the 6 MB TimGM6mb, for tests.
    "tiny": {
        "soundfont": "TimGM6mb",
        "velocities": [64, 110],
        "hold_s": 0.8,
        "styles": {
            "piano": {"program": 0, "low": 57, "high": 69},
            "flute": {"program": 73, "low": 60, "high": 72},
            "violin": {"program": 40, "low": 55, "high": 67},
        },
    },
}


def dynamic_name(velocity: int) -> str:
    """The nearest of p / mf / ff for a velocity."""
    return min(DYNAMICS, key=lambda name: abs(DYNAMICS[name] - velocity))


def note_plan(preset: dict) -> list[dict]:
    """Every note a preset asks for: style, program, pitch, velocity, hold time."""
    plan = []
    for style, spec in preset["styles"].items():
        for pitch in range(spec["low"], spec["high"] + 1):
            for velocity in spec.get("velocities", preset["velocities"]):
                plan.append({"style": style, "program": spec["program"], "bank": spec.get("bank", 0),
                             "pitch": pitch, "velocity": velocity,
                             "hold_s": spec.get("hold_s", preset["hold_s"])})
    return plan
