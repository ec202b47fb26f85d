"""Real processes and real system calls: the model held against the live kernel.

`driver` runs a sequence of the model's environment actions in real worker processes
(`worker.py`, a thin syscall executor started by the driver) and observes their fd tables;
the `scan`, `replay` and restore commands build on it.
"""
