"""waeserver: a neural instrument (WAE-Fader + MCNN) played live through JACK, MIDI and OSC."""

__version__ = "0.1.0"
