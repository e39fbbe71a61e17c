"""Test support shared by several test packages (daemon harnesses, protocol clients)."""
