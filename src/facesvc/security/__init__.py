"""API keys and scopes, and the encryption of embeddings at rest."""
