"""The live sidecar state between the store and the servers."""
