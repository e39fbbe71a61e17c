"""The ``graphdriver`` command line (plumbum). Commands only: no storage logic lives here."""
