"""Servers that let other runtimes use graphdriver (Docker's graphdriver plugin protocol, ...)."""
