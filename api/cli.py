"""`guardian api`: serve the query API."""

from __future__ import annotations

import click

from guardian.settings import get_settings


@click.command()
def api() -> None:
    """Serve the query API (needs GUARDIAN_API_TOKEN)."""
    import uvicorn

    from guardian.api.app import create_app

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning")
