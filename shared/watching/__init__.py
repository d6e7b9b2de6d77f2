"""What watching a job reads from the store: the live stream, the dashboard's chart series, the operators'
/metrics."""
