"""Routers: validate, call a service, shape the response. No logic here."""
