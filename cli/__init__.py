"""The `grpo` command line: run the service (`up`, `serve`, `worker`, `migrate`, `demo`), use it (`submit`, `watch`)."""
