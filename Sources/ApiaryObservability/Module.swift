// The observability module: metrics, HTTP status and dashboard.
