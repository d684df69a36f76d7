"""A fake FreeSWITCH built from byte-exact captures of a real one: for the tests, the benchmarks and ``fs-dynroute call``."""
