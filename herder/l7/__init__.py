"""L7: the HTTP reverse proxy."""
