"""The `pinpipe` command (placeholder until the commands land)."""
import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def version() -> None:
    """Print pinpipe's version."""
    from pinpipe import __version__

    print(__version__)
