"""`nbkit serve`: the web page and HTTP API (`nbkit.server.command`)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> None:
    from nbkit.server.command import run as serve

    serve(args)
