"""Operations: request ids, structured JSON logs and Prometheus metrics."""
