"""Layer 3, the study: the WAE-Fader and its ablation variants, their losses, training and evaluation.
Imports ``dsp`` and ``data``."""
