"""Code both sides run: the settings, the job spec and its checks (`spec/`), the store (`store/`), what watching a
job reads (`watching/`), what users do to jobs (`lifecycle`) and the queue that carries them (`queue`)."""
