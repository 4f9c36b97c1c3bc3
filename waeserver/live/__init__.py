"""Layer 5, the instrument: the C voice pool and its Python side, the JACK client, the render cache
and renderer, controls, MIDI, the OSC address table and its server, config, presets, the daemon
and offline rendering. Loads bundles from ``sound`` and never imports training code."""
