"""The in-memory 1:N index, kept in step with the faces table."""
