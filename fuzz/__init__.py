"""Fuzzing every parser of untrusted bytes: ``python -m fuzz`` (see ``fuzz/__main__.py``)."""
