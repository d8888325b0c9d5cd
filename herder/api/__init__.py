"""Runtime API: status and admin operations over HTTP/JSON."""
