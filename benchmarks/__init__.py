"""Measurements of flask-maintenance-tasks, printed as Markdown tables."""
