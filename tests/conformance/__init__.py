"""The conformance suite every backend runs (Docker graphtest style, real mounts)."""
