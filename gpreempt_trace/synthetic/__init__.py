"""Synthetic data, one place: raw kernel records built in user space (`records`), small hive-style
run folders (`runs`), and a model of KFD on HWS that writes whole traces with their ground truth
(`kfd_model`, `model_trace`). Everything synthetic is marked so in meta.json (`synthetic: true`)."""
from __future__ import annotations


def generate(dest, scheme: str = "A", events: int = 10_000, seed: int = 0, **params):
    """Write a synthetic trace (kfd_model) to `dest` with ground truth; returns its Path."""
    from .model_trace import generate as _generate

    return _generate(dest, scheme, events, seed, **params)
