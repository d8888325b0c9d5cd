"""The built-in demo: three small HTTP servers on loopback and herder in front of them."""
