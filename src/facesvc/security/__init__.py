"""API keys and scopes, the encryption of embeddings at rest, and the lockout after failed
verifications."""
