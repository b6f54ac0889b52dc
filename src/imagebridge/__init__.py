"""imagebridge: standards-based exchange of diagnostic images."""

__version__ = "0.1.0"
