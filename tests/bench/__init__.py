"""`make bench`: performance figures against the budgets in ARCHITECTURE.md."""
