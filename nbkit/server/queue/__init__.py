"""The one queue between the HTTP handlers and the worker threads that run work on the replicas.

Generation is seconds to minutes of blocking device calls, so it runs in worker threads, never on the
event loop that answers clients. Work from every client (generation, upscales, reranks) waits in one
line, oldest first:

    events.py     what clients are told, as data: statuses, events, why work was refused
    batching.py   the pure rules: which jobs share a batch, gathering, the estimates of a 429
    work.py       the kinds of queued work (GenerateJob, UpscaleJob, RerankJob), one shape
    state.py      what the admission side and the workers share, under one lock; the run index
    worker.py     a worker per replica: batches, previews, saving, requeue, failure isolation
    admission.py  JobQueue: submit (429s, joining the same work), listen, cancel, start and stop

Nothing is imported here: import the module that holds what you need.
"""
