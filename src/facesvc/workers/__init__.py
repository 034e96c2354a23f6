"""Background work that runs beside the API in each worker process (the job runner)."""
