"""Benchmarks: ours against a reference tool, in one invocation on the same target (``capturelab bench``)."""
