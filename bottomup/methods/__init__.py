"""Grouping methods: one module per method (codec, head, loss), reached through :mod:`bottomup.methods.base`."""
