"""Benchmarks for fs_dynroute's outbound socket server (issue #5): ``python -m benchmarks.run``. Not unit tests."""
