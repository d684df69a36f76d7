"""A fake FreeSWITCH built from byte-exact captures of a real one: for tests, benchmarks and ``fs-dynroute call``."""
