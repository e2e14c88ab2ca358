"""Scripted experiments. `ab`: online request response time under no preemption, scheme A and scheme B,
with the offline job's cost, from the same runs (ab.py drives cells, cell.py runs one; lab.py runs
the same driver inside the 6.12 lab guest). Entry points: experiment.ab.run / experiment.lab.run; apps sit
above gpreempt_trace.api and call only its public functions (docs/architecture.md)."""
