"""Builds the optional compiled allocation kernels (shared/_alloc.c); metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a C compiler the install still succeeds and shared.allocation uses numpy.
        Extension("shared._alloc", ["shared/_alloc.c"], extra_compile_args=["-O3"], optional=True),
    ],
)
