"""The built-in backends; importing this package registers them."""

from . import overlay2  # noqa: F401

try:
    from . import vfs  # noqa: F401
except ImportError:  # lands separately
    pass

try:
    from . import aufs  # noqa: F401
except ImportError:  # the aufs backend lands separately
    pass
