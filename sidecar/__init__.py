"""The PlanGate sidecar: catalog, engine, store, sync, server and CLI layers."""
