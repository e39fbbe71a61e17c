"""The built-in backends, one module each; importing a module registers its backend
(:func:`graphdriver.registry.backend` imports them by name, on first use)."""
