"""Execute and verify: thin syscall wrappers, the kernel's mount table, and feature probes."""
