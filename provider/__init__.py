"""PlanGate OpenFeature provider."""
