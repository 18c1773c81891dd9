"""homelab runbooks."""
