"""Built-in workloads: torch models that play the online (latency-critical) and offline (batch)
roles on one GPU, writing request/step markers into a trace so latency joins queue events."""
