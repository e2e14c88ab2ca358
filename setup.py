"""Only what pyproject.toml cannot say: the package list is found (gpreempt_trace.*) AND extended by the
top-level data folders, which ship inside the package under these names (see gpreempt_trace/contracts/resources.py).
Their files are chosen by [tool.setuptools.package-data] in pyproject.toml."""
from setuptools import find_packages, setup

DATA_FOLDERS = {"gpreempt_trace.tracers": "tracers", "gpreempt_trace.queries": "queries", "gpreempt_trace.kernel": "kernel"}

setup(packages=find_packages(include=["gpreempt_trace", "gpreempt_trace.*"]) + list(DATA_FOLDERS), package_dir=DATA_FOLDERS)
