"""``python -m fedvault.fl.integrations.flower enrol|roster|flower-run ...`` (see :mod:`.cli`)."""

from .cli import main

raise SystemExit(main())
