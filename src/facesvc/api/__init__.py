"""HTTP layer: routers, schemas, dependencies and problem+json errors."""
