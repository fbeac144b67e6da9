"""Readers and writers for every LPR4M file; readers return Arrow tables (see :mod:`.schema`)."""
