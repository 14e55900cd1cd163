"""Tests of the `lab` command line (``tests.helpers.cli.run_lab`` runs it like a user does)."""
