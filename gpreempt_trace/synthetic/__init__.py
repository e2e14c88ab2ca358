"""Synthetic data, one place: raw kernel records built in user space (`records`), small hive-style
run folders (`runs`). Everything synthetic is marked so in meta.json (`synthetic: true`)."""
