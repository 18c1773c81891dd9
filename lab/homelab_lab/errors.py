"""The rehearsal lab's own errors (they stand on the library's tree, never the other way round).

HomelabError                    (homelab_lib.core.errors)
└── LabError                    the rehearsal lab could not start, stop or be reached
    └── KubeStandinError        the lab's Kubernetes stand-in (k3s) refused to start: flags, token, address
        └── KubeStatus          an API request the stand-in refuses; carries the Kubernetes Status it answers
"""

from __future__ import annotations

from homelab_lib.core.errors import HomelabError


class LabError(HomelabError):
    """The rehearsal lab could not be started, stopped or reached."""


class KubeStandinError(LabError):
    """The lab's Kubernetes stand-in (its ``k3s server``) could not start: bad flags or config, a token
    other than the stored one, an address in use."""


class KubeStatus(KubeStandinError):
    """A request the stand-in's API refuses; it is answered as a Kubernetes ``Status`` object.

    Attributes:
        code: the HTTP status (400, 401, 403, 404, 409, 410, 415, 422, 500...).
        reason: the Status reason (``NotFound``, ``AlreadyExists``, ``Conflict``, ``Invalid``...).
        details: the Status ``details`` (name, group, kind, causes), possibly empty.
    """

    def __init__(self, code: int, reason: str, message: str, details: dict[str, object] | None = None) -> None:
        self.code = code
        self.reason = reason
        self.details = dict(details or {})
        super().__init__(message)

    def status(self) -> dict[str, object]:
        """The Status object the API answers."""
        out: dict[str, object] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out
