"""Background work on timers and threads: the clock loop with the timekeeper and the
lifecycle scheduler, housekeeping, the outbox worker and quota actions."""
