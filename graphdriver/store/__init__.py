"""On-disk state shared across processes: locks, mount reference counts, small atomic files."""
