"""Generated gRPC modules of containerd's snapshots API (see README.md here: regenerate.sh makes them)."""
