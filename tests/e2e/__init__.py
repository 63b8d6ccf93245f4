"""End-to-end tests through the simulated cluster."""
