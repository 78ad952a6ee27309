"""Installs the top-level ``kernels/`` folder as ``llm4sbr.kernels`` (never as a top-level
``kernels``, which would clash with an unrelated PyPI package). Everything else is in
pyproject.toml."""

from setuptools import find_packages, setup

packages = find_packages(include=["llm4sbr", "llm4sbr.*"]) + ["llm4sbr.kernels"]
setup(packages=packages, package_dir={"llm4sbr.kernels": "kernels"})
