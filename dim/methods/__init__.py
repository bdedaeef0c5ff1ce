"""Representation-learning methods: one LightningModule per method over a shared base."""
