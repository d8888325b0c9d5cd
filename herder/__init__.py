"""herder: request routing across many servers, at the DNS, L4, L7 and director layers."""

__version__ = "0.1.0"
