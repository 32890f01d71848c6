"""Reconcilers: the I/O around the pure render/observe/decide functions, one module per kind."""
