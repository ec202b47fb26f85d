"""Live-kernel conformance driver (real syscalls in child processes)."""
