"""The torch executor: models, datasets, execution profile, training, replay and aggregation."""
