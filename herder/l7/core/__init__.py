"""Sans-I/O pieces of the HTTP proxy."""
