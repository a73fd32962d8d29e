"""What a usage write carries and how writes are assembled: group commit, top-up and
pool balances, quota marks, lifecycle webhook rows."""
