"""The database and the one door to each of its table families: jobs, their state machine and events, metric
points, checkpoints, samples, uploaded files and the worker registry."""
