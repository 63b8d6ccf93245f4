"""`make bench`: performance figures against the budgets in DESIGN.md."""
