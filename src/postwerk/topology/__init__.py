"""Deployment topology: the reference's network flows for the servers at hand."""
