"""Celery workers: claim a job in the database, train it with TRL's GRPOTrainer in a child process."""
