"""Live dashboard, run reports and their data access (local store or InfluxDB)."""
