"""Layer 1, signals: spectral maths (log-mel, its inverse, Griffin-Lim, distances), pitch facts and
the YIN tracker, multi-resolution STFT losses. Imports nothing of waeserver but ``plain``."""
