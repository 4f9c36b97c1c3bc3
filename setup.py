"""The C voice pool (waeserver/live/_voices.c): a plain shared library, loaded with ctypes."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("waeserver.live._voices", ["waeserver/live/_voices.c"], extra_compile_args=["-O2"],
                             libraries=["m"])])
