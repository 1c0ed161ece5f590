"""Metrics (pure functions over tensors) and report building. Filled in by the evaluation issue."""
