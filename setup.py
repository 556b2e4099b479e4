"""Build hook for the optional C accelerator of fixserver.codec (metadata is in setup.cfg).

``optional=True``: where the extension cannot be compiled (no compiler, PyPy) the install still
succeeds and fixserver.codec runs its pure-Python code, which is the reference anyway.
"""

from __future__ import annotations

import platform

from setuptools import Extension, setup

ext_modules = []
if platform.python_implementation() == "CPython":
    ext_modules.append(
        Extension("fixserver._codec_accel", ["fixserver/_codec_accel.c"], optional=True)
    )

setup(ext_modules=ext_modules)
