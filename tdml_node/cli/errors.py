"""One place that turns a command's failure into one clear line and an exit status.

Usage errors (bad flags, unknown names, malformed ids) are click's
``UsageError``: status 2. Runtime errors the user can act on (an unreachable
node, an RPC error, a missing or unreadable file, a bad key, config or
genesis) are mapped here to one line on stderr: status 1. An interrupt
(Ctrl-C, SIGINT) is status 130, the shell's convention. Anything else is a
bug and keeps its traceback.

This module must never hold node logic or catch an exception it cannot name.
"""

from __future__ import annotations

from typing import Any

import click

from tdml_node.client import NodeUnreachable, RpcCallError
from tdml_node.config import ConfigError
from tdml_node.genesis import GenesisError
from tdml_node.keys import KeyFileError

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def user_message(exc: BaseException) -> str | None:
    """The one line that explains ``exc`` to an operator, or None when it is a bug."""
    from tdml_node.devnet import DevnetError
    from tdml_node.devtools.wiring import BehaviourError
    from tdml_node.work.specfile import SpecFileError
    from tdml_node.work.userdata import DataFileError

    if isinstance(exc, NodeUnreachable):
        return f"{exc} — is `tdml-node run` running?"
    if isinstance(exc, RpcCallError):
        return f"the node refused: {exc.message} (code {exc.code})"
    if isinstance(exc, KeyFileError | ConfigError | GenesisError | DevnetError | BehaviourError | SpecFileError | DataFileError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    return None


class CliGroup(click.Group):
    """The root group: every subcommand runs inside its error mapping."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except (KeyboardInterrupt, click.Abort):
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            message = user_message(exc)
            if message is None:
                raise
            raise click.ClickException(message) from exc
