"""Serving backends: where each environment's serving host runs (`local` processes; a fake for tests)."""
