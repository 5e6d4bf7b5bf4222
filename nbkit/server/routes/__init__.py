"""The HTTP routes of `nbkit serve`, one router (a list of Starlette routes, `ROUTES`) a group:

    common.py       what every handler shares: the bounded JSON body, the path prefix, a job by id
    site.py         the page, /api/info and /metrics
    jobs.py         /api/jobs: submit, status, cancel, and the SSE events of a job
    runs.py         /api/runs, /api/images and /api/rerank: the output folder, read by plain name
    upscale_jobs.py /api/upscale: a saved image checked, the upscaler loaded, the upscale queued
    translation.py  /api/translate: the English a job would draw, to check first
    clients.py      /generate and /dalle for dalle-playground and the official DALL·E mini app

Each handler is thin: it reads its input through protocol.py, hands the work to the job queue (or reads
the output folder through folders.py), and answers JSON shaped by protocol.py. app.py puts the routers
together behind the gate. Nothing is imported here.
"""
