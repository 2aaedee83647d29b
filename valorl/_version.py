"""The package version, in a module of its own: run configs, dataset metadata and reports record
it from any layer without importing the top package (whose `__init__` imports everything)."""

__version__ = "0.1.0"
