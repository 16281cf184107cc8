"""The version of hf-poscuda: the one place it is written (``pyproject.toml`` reads it from here at build time).

Modules of the package import it from here, never from ``hf_poscuda/__init__.py``, which may still be importing.
"""

__version__ = "0.2.0"
