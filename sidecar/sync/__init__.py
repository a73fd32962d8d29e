"""Catalog file watching (and, in shared mode, the store change feed)."""
