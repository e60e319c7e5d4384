"""The library's version, in a module below every layer (any module may import it)."""
__version__ = "0.1.0"
