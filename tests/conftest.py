import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Torch on 2 cores: one intra-op thread per pytest-xdist worker avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # secagg/protocols tests run without torch
    pass


@pytest.fixture(autouse=True, scope="session")
def _hermetic_state_dir(tmp_path_factory: pytest.TempPathFactory):
    """Paillier decryptors keep a durable decrypt-once log per key under the state directory:
    the suite writes it to a per-session temporary directory, never into the user's home."""
    old = os.environ.get("FEDVAULT_STATE_DIR")
    os.environ["FEDVAULT_STATE_DIR"] = str(tmp_path_factory.mktemp("fedvault-state"))
    yield
    if old is None:
        os.environ.pop("FEDVAULT_STATE_DIR", None)
    else:
        os.environ["FEDVAULT_STATE_DIR"] = old
