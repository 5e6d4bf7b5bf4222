"""`nbkit serve`: a web page and an HTTP API in front of one Pipeline (or Ray Serve replicas), shared by
many people.

    command.py   the command's options (imported by the CLI's parser: argparse only at module level)
    options.py   ServerOptions, what a server was asked for
    launch.py    the one launcher (bind, load, uvicorn, stop) behind `nbkit serve` and `colab.serve`
    gate.py      what every request passes first: token, Host, Origin, content type, CORS
    app.py       the ASGI app: the routers together, errors answered as JSON, behind the gate
    routes/      the HTTP routes (Starlette), one router a group: jobs, runs, upscale, translate, clients
    protocol.py  the checks of a body's fields; the answers' JSON shapes
    job_input.py /api/jobs, /api/translate, /api/upscale bodies → specs → GenerationRequest
    generate_input.py  the two /generate clients' bodies → a Generate spec
    folders.py   reading the output folder: runs and images by plain name, as manifests list them
    queue/       the one queue of work (generation, upscales, reranks) and a worker thread per replica
    metrics.py   /metrics: the server's figures in the Prometheus text format
    replicas/    what runs one packed batch: this process's Pipeline, or Ray Serve replicas
    static/      the page

Nothing is imported here: `python -m nbkit --help` imports this package and must stay quick.
"""
