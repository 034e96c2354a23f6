"""The deployment files (paths from the repository root) and what several of them must agree on:
the base image, and the settings with no `.env` file read."""

from __future__ import annotations

from pathlib import Path

from facesvc.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "nginx" / "nginx.conf"
ENV_EXAMPLE = ROOT / ".env.example"
MAKEFILE = ROOT / "Makefile"

BASE_IMAGE = "python:3.11-slim-bookworm"


def default_settings() -> Settings:
    return Settings(_env_file=None)
