"""Where results go: InfluxDB (Kafka mode) or a local store (embedded default)."""
