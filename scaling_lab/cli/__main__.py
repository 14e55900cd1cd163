"""``python -m scaling_lab.cli ...`` runs ``lab`` (how torchrun launches training)."""

from scaling_lab.cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())
