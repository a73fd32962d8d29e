"""Wire code shared by the provider and the sidecar: generated stubs and value conversion."""
