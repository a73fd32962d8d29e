"""The live state: the in-memory snapshot and every change to it, the change events
streams listen to, and the layer of accounts the catalog file declares."""
