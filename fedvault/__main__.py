"""``python -m fedvault`` is the ``fedvault`` command."""

from fedvault.fl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
