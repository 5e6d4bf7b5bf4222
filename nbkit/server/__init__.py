"""`nbkit serve`: a web page and an HTTP API in front of one Pipeline (or Ray Serve replicas), shared by
many people.

    command.py   the command's options (imported by the CLI's parser: argparse only at module level)
    options.py   ServerOptions, what a server was asked for
    launch.py    the one launcher (bind, load, uvicorn, stop) behind `nbkit serve` and `colab.serve`
    gate.py      what every request passes first: token, Host, Origin, content type, CORS
    routes.py    the HTTP routes (Starlette) and the app behind the gate
    protocol.py  the checks of a body's fields; the answers' JSON shapes
    job_input.py /api/jobs, /api/translate, /api/upscale bodies → specs → GenerationRequest
    generate_input.py  the two /generate clients' bodies → a Generate spec
    folders.py   reading the output folder: runs and images by plain name, as manifests list them
    jobs.py      the FIFO queue and the worker threads (one per replica) that pack jobs into batches
    metrics.py   /metrics: the server's figures in the Prometheus text format
    replicas/    what runs one packed batch: this process's Pipeline, or Ray Serve replicas
    static/      the page

Nothing is imported here: `python -m nbkit --help` imports this package and must stay quick.
"""
