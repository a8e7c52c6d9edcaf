"""Cluster bring-up: k0s releases, config, tokens, the lab's CA and users, and the lab lifecycle."""
