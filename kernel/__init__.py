"""The kernel patch series; only uapi_scheme_b.json ships inside the wheel (gpreempt_trace.kernel)."""
