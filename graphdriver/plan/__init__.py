"""Pure planning: layouts and mount plans computed without side effects, and their checks."""
