"""``python -m homelab_lib.lab.kube``: the stand-in's ``k3s`` command."""

import sys

from homelab_lib.lab.kube.cli import main

sys.exit(main())
