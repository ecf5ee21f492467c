"""Helpers shared by every task: padding, device/precision resolution, seeding."""
