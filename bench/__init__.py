"""Benchmarks (`make bench` = `python -m bench`): each bench/bench_<topic>.py has a main() that prints numbers."""
