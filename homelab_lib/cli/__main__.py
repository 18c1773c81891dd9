"""`python -m homelab_lib.cli`: the `homelab` command."""

import sys

from homelab_lib.cli import main

sys.exit(main())
