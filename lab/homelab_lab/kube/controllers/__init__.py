"""Controllers modelling K3s: each reconciles stored objects towards their spec.

:class:`~homelab_lab.kube.controllers.base.Loop` runs them in a thread, woken by every
change to the store (and every half second, for time-driven work such as back-offs).
"""

from homelab_lab.kube.controllers.base import Controller, Loop

__all__ = ["Controller", "Loop"]
