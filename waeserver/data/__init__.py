"""Layer 2, datasets: soundfont recipes rendered with FluidSynth, a user's own samples with their
tags, and the dataset folder every later layer reads. Imports ``dsp`` only."""
