"""Seeded, deterministic demo data: seven channels of landing files plus the ground truth."""
