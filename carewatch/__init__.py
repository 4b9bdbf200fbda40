"""carewatch: the command-line entry point shared by every role."""

__version__ = "0.1.0"
