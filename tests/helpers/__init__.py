"""Code the tests share: stand-ins, fakes, inline specs, small datasets.

Test files import shared code only from here (``tests/test_test_imports.py`` checks it),
never from another test file: importing a test file runs its module code and can collect its
tests twice, so a change to one test would quietly change another.
"""
