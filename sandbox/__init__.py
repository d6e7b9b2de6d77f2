"""The sandbox that runs users' code (reward functions) in a confined process of its own, the service's built-in
rewards, and the reward preview. Used by the workers (through `worker/rewards.py`) and by the API's preview; it
imports neither torch nor the worker."""
