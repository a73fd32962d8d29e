"""Admin edits as pure edits of an account record, their audit entries, and plan migration."""
