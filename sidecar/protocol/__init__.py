"""Generated stubs of the flagd evaluation protocol, served by the sidecar only (an application may
load openfeature-provider-flagd beside PlanGate's provider, whose own stubs register the same names).
"""
