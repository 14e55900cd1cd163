"""Command line entry point: ``python lab.py ...`` (also installed as ``lab``)."""

from scaling_lab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
