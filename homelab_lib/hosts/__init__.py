"""Hosts reached over SSH: the SSH session, a Docker Engine over SSH with SFTP, file manifests (checksums)."""
