"""Samplers (safety-sample mixing, constant-length samplers for online drops)."""
