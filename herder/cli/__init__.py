"""The ``herder`` command line: thin; options map one to one onto config fields."""
