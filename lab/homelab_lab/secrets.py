"""The lab's secrets: the parameters name them by ``file:`` reference, the lab makes the files.

A real homelab keeps its secrets in files or variables its operator fills. The lab's
parameter file points its references at ``<state_dir>/secrets/<name>``; ``up`` writes
a random value into each such file that does not exist yet (mode 600), and keeps it
for the lab's life, so the runbooks read them like any other secret reference.
"""

from __future__ import annotations

import secrets as pysecrets
from collections.abc import Callable

from homelab_lab import common
from homelab_lib.inventory.model import Inventory

FOLDER = "secrets"


def ensure(inv: Inventory, progress: Callable[[str], None]) -> list[str]:
    """Write a value into every secret file the parameters reference under the lab's secrets folder.

    Returns:
        The key paths of the secrets made now.
    """
    folder = common.lab_settings(inv).state_dir / FOLDER
    made = []
    for key_path, ref in inv.secrets():
        if ref.kind != "file" or not ref.path.is_relative_to(folder) or ref.path.exists():
            continue
        common.write_private(ref.path, pysecrets.token_urlsafe(24) + "\n")
        made.append(key_path)
    if made:
        progress(f"secrets: made {len(made)} lab secret(s): {', '.join(made)}")
    return made
