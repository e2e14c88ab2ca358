"""BPF C sources (probe side of the recorder), shipped inside the wheel as gpreempt_trace.tracers."""
