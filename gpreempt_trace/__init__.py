"""gpreempt-trace: observe and control GPU queue preemption on AMD GPUs driven by KFD."""
__version__ = "0.1.0"
