"""Layer tars in and out: apply, diff, changes, sizes, whiteout formats and path safety."""
