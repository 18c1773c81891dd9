"""``python -m homelab_lab.kube``: the stand-in's ``k3s`` command."""

import sys

from homelab_lab.kube.cli import main

sys.exit(main())
