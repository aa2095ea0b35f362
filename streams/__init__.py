"""Transports around the pure processor: the Faust topology and the embedded runner."""
