"""The C voice pool (waeserver/_voices.c): a plain shared library, loaded with ctypes."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("waeserver._voices", ["waeserver/_voices.c"], extra_compile_args=["-O2"],
                             libraries=["m"])])
