"""The sample app's maintenance tasks (found by flask-maintenance-tasks)."""
