"""What the tests share: the CLI runner, real servers, inputs, process control, database counts, the review site.

Test files import from here (or take a fixture from tests/conftest.py), never from one another.
"""
