"""graphdriver: container image layers on the kernel's union filesystems, verified against the kernel."""

from .driver import DEFAULT_ROOT, PRIORITY, Drift, Driver, backends, open_driver
from .errors import GraphDriverError

__all__ = ["DEFAULT_ROOT", "PRIORITY", "Drift", "Driver", "GraphDriverError", "backends", "open_driver"]
__version__ = "0.1.0"
