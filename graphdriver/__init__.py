"""graphdriver: container image layers on the kernel's union filesystems, verified against the kernel."""

from .driver import Drift, Driver
from .errors import GraphDriverError
from .registry import DEFAULT_ROOT, PRIORITY, backends, chosen_driver, open_driver

__all__ = ["DEFAULT_ROOT", "PRIORITY", "Drift", "Driver", "GraphDriverError", "backends", "chosen_driver",
           "open_driver"]
__version__ = "0.1.0"
