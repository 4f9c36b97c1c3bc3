"""The C libraries (waeserver/live/_voices.c, the voice pool; waeserver/sound/_harmonic.c, the
harmonic inverter's synthesis at inference): plain shared libraries, loaded with ctypes."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("waeserver.live._voices", ["waeserver/live/_voices.c"], extra_compile_args=["-O2"],
                             libraries=["m"]),
                   Extension("waeserver.sound._harmonic", ["waeserver/sound/_harmonic.c"], extra_compile_args=["-O2"],
                             libraries=["m"])])
