"""Trainer callbacks (online re-scoring, safety evaluation during training)."""
