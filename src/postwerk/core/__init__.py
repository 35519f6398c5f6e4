"""Vocabulary shared by every layer: addresses, replies, ids, protocol-neutral errors."""
