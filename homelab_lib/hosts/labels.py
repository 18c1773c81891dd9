"""The names of the labels on Docker objects: those the runbooks write, and those Compose writes.

One home for these keys. Runbook 02's renderer (:mod:`homelab_lib.compose.render`) puts the
``homelab.*`` labels on every container it defines, and on its volumes; observe, drift and
deploy read them back, so what runs is scoped to its homelab and host and a change is found by
comparing config hashes. Compose itself labels what it creates with ``com.docker.compose.*``:
the project and service a container belongs to, and the folder it was deployed from.

    homelab.homelab       the inventory's name
    homelab.host          the Docker VM's name
    homelab.stack         the stack's name in the inventory
    homelab.service       the Compose service
    homelab.config-hash   the hash of the service's rendered definition
    homelab.network       on a network the runbooks created (the reverse proxy's)
    homelab.restore-test  on a scratch container of a restore test (runbook 06), removed after it
"""

from __future__ import annotations

PREFIX = "homelab"
HOMELAB_LABEL = f"{PREFIX}.homelab"
HOST_LABEL = f"{PREFIX}.host"
STACK_LABEL = f"{PREFIX}.stack"
SERVICE_LABEL = f"{PREFIX}.service"
HASH_LABEL = f"{PREFIX}.config-hash"
NETWORK_LABEL = f"{PREFIX}.network"
RESTORE_TEST_LABEL = f"{PREFIX}.restore-test"

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_WORKING_DIR = "com.docker.compose.project.working_dir"

__all__ = [
    "COMPOSE_PROJECT",
    "COMPOSE_SERVICE",
    "COMPOSE_WORKING_DIR",
    "HASH_LABEL",
    "HOMELAB_LABEL",
    "HOST_LABEL",
    "NETWORK_LABEL",
    "PREFIX",
    "RESTORE_TEST_LABEL",
    "SERVICE_LABEL",
    "STACK_LABEL",
]
