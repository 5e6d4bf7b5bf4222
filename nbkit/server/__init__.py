"""`nbkit serve`: a web page and an HTTP API in front of one Pipeline, shared by many people.

    command.py   the command's options (imported by the CLI's parser: argparse only at module level)
    app.py       the HTTP API (Starlette), its token and CORS gate, uvicorn around it
    jobs.py      the FIFO queue and the one worker thread that owns the Pipeline and packs batches
    static/      the page

Nothing is imported here: `python -m nbkit --help` imports this package and must stay quick.
"""
